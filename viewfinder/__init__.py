"""viewfinder: agentic image-text retrieval.

The code lives in two subpackages, :mod:`viewfinder.pipeline` (index store, stages, agent loops,
evaluation, training, CLI) and :mod:`viewfinder.adapters` (one module per model family). The names
most users need are importable from here, lazily (``import viewfinder`` stays cheap)::

    import viewfinder

    try:
        result = viewfinder.open_index("photos.index").search("a dog on a beach", k=5)
    except viewfinder.Error as exc:  # every error a user can fix derives from it
        print(exc)
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import Error

__version__ = "0.1.0"

_LAZY = ("Pipeline", "QueryState", "Trace", "build_index", "open_index", "Searcher", "load_preset", "load_encoder")

__all__ = ["Error", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("viewfinder.pipeline"), name)
    raise AttributeError(f"module 'viewfinder' has no attribute {name!r}")
