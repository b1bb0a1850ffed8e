"""viewfinder's pipeline: index store, indexing, search, evaluation, benchmarks, CLI.

The main entry points are imported lazily (``import viewfinder.pipeline`` stays cheap)::

    from . import build_index, open_index

    build_index("photos/", "photos.index", preset="vit-b-32-laion2b")
    result = open_index("photos.index").search("a dog on a beach", k=5)
    for hit in result.hits:
        print(hit.rank, hit.score, hit.path)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Pipeline": "viewfinder.pipeline.stages.runner",
    "QueryState": "viewfinder.pipeline.stages.state",
    "Trace": "viewfinder.pipeline.stages.trace",
    "build_index": "viewfinder.pipeline.api",
    "open_index": "viewfinder.pipeline.api",
    "Searcher": "viewfinder.pipeline.store.search",
    "SearchResult": "viewfinder.pipeline.store.search",
    "Hit": "viewfinder.pipeline.store.search",
    "QueryError": "viewfinder.pipeline.store.search",
    "Indexer": "viewfinder.pipeline.store.indexer",
    "IndexReport": "viewfinder.pipeline.store.indexer",
    "IndexStore": "viewfinder.pipeline.store.index_store",
    "StoreError": "viewfinder.pipeline.store.index_store",
    "EncoderMismatchError": "viewfinder.pipeline.store.index_store",
    "load_preset": "viewfinder.pipeline.stages.presets",
    "load_encoder": "viewfinder.adapters.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'viewfinder.pipeline' has no attribute {name!r}")
