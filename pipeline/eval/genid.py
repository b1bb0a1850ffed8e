"""Generative identifiers measured: text -> image recall of identifier models beside the dual
encoder (CLIP) on the same index and queries, their fusion (reciprocal rank fusion), invalid
outputs, and decoding time per query beside FAISS search time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np


def _recall(ranks: list[float]) -> dict[str, float]:
    r = np.asarray(ranks, dtype=float)
    return {f"R@{k}": float((r <= k).mean()) for k in (1, 5, 10)} | {"median_rank": float(np.median(r))}


def genid_report(
    manifest: Path,
    index: Path,
    models: list[Path],
    *,
    n_queries: int | None = None,
    k: int = 10,
    beams: int = 10,
    clip_depth: int = 50,
    rrf_k: int = 60,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, Any]:
    """T->I R@1/5/10 of CLIP alone, each identifier model alone, and CLIP + model (RRF), on the
    captions of ``manifest``'s images that ``index`` holds (a seeded sample of ``n_queries``)."""
    from ..genid.model import IdentifierModel, check_index
    from ..progress import progress_bar
    from ..stages.genid import reciprocal_rank_fusion
    from ..store.search import Searcher
    from .retrieval import load_manifest, machine_info

    evalset = load_manifest(manifest)
    searcher = Searcher.open(index)  # the index's own encoder and search settings
    store = searcher.store
    item_of = {row.key: row.id for row in store.iter_items()}
    pairs = zip(evalset.captions, (evalset.image_keys[o] for o in evalset.caption_image), strict=True)
    queries = [(text, item_of[key]) for text, key in pairs if key in item_of]
    if not queries:
        raise ValueError(f"none of {manifest}'s images is in {index}: index them first")
    if n_queries and n_queries < len(queries):
        rng = np.random.default_rng([seed, 73])
        queries = [queries[int(i)] for i in sorted(rng.choice(len(queries), n_queries, replace=False))]
    clip_lists, encode_s, search_s = [], 0.0, 0.0
    searcher.encode_query_text(queries[0][0])  # warm-up: the first call's one-off costs are not a query's
    for start in range(0, len(queries), 64):
        texts = [q for q, _ in queries[start : start + 64]]
        t0 = time.perf_counter()
        vecs = np.concatenate([searcher.encode_query_text(t)[0] for t in texts])
        t1 = time.perf_counter()
        hits = searcher.search_vectors(vecs, clip_depth, {})
        search_s += time.perf_counter() - t1
        encode_s += t1 - t0
        clip_lists += [[h.id for h in row] for row in hits]
    targets, n = [t for _, t in queries], len(queries)
    miss = clip_depth + 1

    def rank(ranking: list[int], target: int) -> float:
        return ranking.index(target) + 1 if target in ranking else miss

    report: dict[str, Any] = {
        "manifest": str(manifest), "index": str(index), "items": len(item_of), "n_queries": len(queries),
        "k": k, "beams": beams, "clip_depth": clip_depth, "rrf_k": rrf_k, "machine": machine_info(),
        "clip": _recall([rank(c, t) for c, t in zip(clip_lists, targets, strict=True)])
        | {"encode_ms_per_query": 1000 * encode_s / n, "search_ms_per_query": 1000 * search_s / n},
        "models": {},
    }  # fmt: skip
    for folder in models:
        model = IdentifierModel.load(folder)
        check = check_index(model.info, store)
        decoded: list[list[int]] = []
        seconds = 0.0
        with progress_bar(f"decoding ({model.info.scheme})", len(queries), "query", progress) as bar:
            for start in range(0, len(queries), batch_size):
                texts = [q for q, _ in queries[start : start + batch_size]]
                t0 = time.perf_counter()
                out = model.retrieve(texts, k=k, beams=beams)
                seconds += time.perf_counter() - t0
                decoded += [[i for i, _ in hits] for hits in out]
                bar.advance(len(texts))
        fused = [reciprocal_rank_fusion([c, g], [1.0, 1.0], rrf_k) for c, g in zip(clip_lists, decoded, strict=True)]
        fused_lists = [sorted(f, key=lambda i: -f[i]) for f in fused]
        report["models"][str(folder)] = {
            "scheme": model.info.scheme, "items_learned": len(model.id_map.ids), "items_added_since": len(check.new),
            "alone": _recall([rank(d, t) for d, t in zip(decoded, targets, strict=True)]),
            "fused_with_clip_rrf": _recall([rank(f, t) for f, t in zip(fused_lists, targets, strict=True)]),
            "invalid_outputs": model.invalid, "decode_ms_per_query": 1000 * seconds / len(queries),
            "decode_batch_size": batch_size,
        }  # fmt: skip
    store.close()
    return report


__all__ = ["genid_report"]
