"""Query latency of whole pipelines: each preset's stages timed on the same index and queries.

Several presets are timed in one run, in turn query by query, so a busy machine skews them alike;
the report gives p50/p95 per preset and per stage, and each preset's p50 as a ratio to the first
(e.g. CLIP only vs CLIP + rerank of the top 128, with and without the feature cache). A warm-up
pass runs first (it also fills feature caches, so "cached" figures are steady-state ones).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..store.records import StoreError
from .data import load_average

logger = logging.getLogger(__name__)


@dataclass
class PresetLatency:
    preset: str
    p50_ms: float
    p95_ms: float
    stages_p50_ms: dict[str, float]
    ratio_to_first: float
    """p50 of this preset / p50 of the first preset of the run."""


@dataclass
class QueryBench:
    index: str
    queries: int
    k: int
    load_average: float
    results: list[PresetLatency] = field(default_factory=list)


def default_queries(index: str | Path, n: int, seed: int = 0) -> list[str]:
    """``n`` texts of the index's own items (manifest captions; for a folder index, file names read as
    words), drawn with a seed: latency depends on query length, not on what the words mean."""
    import re

    from ..store.index_store import IndexStore

    with IndexStore.open(index) as store:
        rows = list(store.iter_items())
    texts = [row.text for row in rows if row.text] or [
        " ".join(re.split(r"[\W_]+", Path(row.key).stem)).strip() or "an image" for row in rows
    ]
    if not texts:
        raise StoreError(f"index {index} is empty: nothing to draw queries from")
    rng = np.random.default_rng(seed)
    return [texts[i] for i in rng.choice(len(texts), min(n, len(texts)), replace=False)]


def bench_query(
    index: str | Path,
    presets: list[Any],
    queries: list[str],
    k: int = 10,
    warmup: int = 5,
    *,
    fill_caches: bool = False,
) -> QueryBench:
    """Time every preset's pipeline (names, files or :class:`Preset` objects) on ``queries`` over ``index``.

    ``fill_caches``: first fill every rerank stage's caches for the whole index, as ``viewfinder
    index --with rerank`` does, so cached figures are steady-state ones.
    """
    from ..stages.runner import Pipeline
    from ..store.features import precompute_features

    pipelines = [Pipeline.from_preset(p, index=index) for p in presets]
    if fill_caches:
        for pipeline in pipelines:
            for stage in pipeline.stages:
                for source in (getattr(stage, "features", None), getattr(stage, "embeds", None)):
                    if source is not None and source.cache is not None:
                        precompute_features(pipeline.store, source)
    names = [str(getattr(p, "name", p)) for p in presets]
    for pipeline in pipelines:
        for text in queries[:warmup]:
            pipeline.search(text, k=k)
    totals: list[list[float]] = [[] for _ in presets]
    stages: list[dict[str, list[float]]] = [{} for _ in presets]
    run = QueryBench(str(index), len(queries), k, load_average())
    for text in queries:
        for i, pipeline in enumerate(pipelines):
            start = time.perf_counter()
            result = pipeline.search(text, k=k)
            totals[i].append(time.perf_counter() - start)
            for name, seconds in result.timings.items():
                stages[i].setdefault(name, []).append(seconds)
    first = float(np.percentile(totals[0], 50))
    for preset, total, per_stage in zip(names, totals, stages, strict=True):
        p50 = float(np.percentile(total, 50))
        run.results.append(
            PresetLatency(
                preset,
                1000 * p50,
                1000 * float(np.percentile(total, 95)),
                {name: 1000 * float(np.percentile(v, 50)) for name, v in per_stage.items()},
                p50 / first,
            )
        )
    return run


def as_rows(run: QueryBench) -> list[dict[str, Any]]:
    return [vars(r) for r in run.results]


def rerank_presets(index: str | Path, model: str, k: int, itm_k: int = 8) -> list[Any]:
    """The pipelines ``viewfinder bench rerank`` compares: the index's own preset cut to preselect
    alone, then + rerank of the top ``k`` with ``model`` (ITM on the best ``itm_k``) with its caches,
    the same without any cache, and ITM on all ``k`` (LAVIS's protocol) with the caches."""
    from dataclasses import replace

    from ..config import StageSpec
    from ..stages.preselect import PreselectConfig
    from ..stages.presets import preset_for_index
    from ..stages.rerank import RerankConfig
    from ..store.index_store import IndexStore

    with IndexStore.open(index) as store:
        base = preset_for_index(None, store)
    preselect = [StageSpec("preselect", PreselectConfig())]
    rerank = [StageSpec("preselect", PreselectConfig(k=k))]

    def with_rerank(name: str, **settings: Any) -> Any:
        return replace(base, name=name, stages=[*rerank, StageSpec("rerank", RerankConfig(model, k, **settings))])

    return [
        replace(base, name="preselect only", stages=preselect),
        with_rerank(f"+ rerank {k}, ITM {itm_k} (cache)", itm_k=itm_k),
        with_rerank(f"+ rerank {k}, ITM {itm_k} (no cache)", itm_k=itm_k, cache=False, embed_cache=False),
        with_rerank(f"+ rerank {k}, ITM {k} (cache)", itm_k=None),
    ]
