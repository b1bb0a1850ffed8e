"""Generative identifiers measured: text -> image recall of identifier models beside the dual
encoder (CLIP) on the same index and queries, their fusion with CLIP, invalid outputs, and decoding
time per query beside FAISS search time.

Fusion settings are compared honestly: the queries are split in two seeded halves; the setting with
the best R@1 on the *tuning* half is reported on the *held-out* half beside CLIP's R@1 there."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ...adapters.entries import ConfigError

DEFAULT_FUSIONS: tuple[tuple[str, float], ...] = (
    ("rrf", 1.0), ("rrf", 0.5), ("rrf", 0.25), ("score", 0.5), ("score", 0.2), ("score", 0.1), ("score", 0.05),
)  # fmt: skip
"""(method, weight) pairs tried when fusing an identifier model's list with CLIP's."""


def _recall(ranks: list[float] | np.ndarray) -> dict[str, float]:
    r = np.asarray(ranks, dtype=float)
    if not r.size:
        return {"R@1": float("nan"), "R@5": float("nan"), "R@10": float("nan"), "median_rank": float("nan")}
    return {f"R@{k}": float((r <= k).mean()) for k in (1, 5, 10)} | {"median_rank": float(np.median(r))}


def fusion_name(method: str, weight: float) -> str:
    """``rrf:1`` / ``score:0.1``: the key of a fusion setting in reports and on the command line."""
    return f"{method}:{weight:g}"


def parse_fusion(text: str) -> tuple[str, float]:
    """``METHOD:WEIGHT`` (``rrf:0.5``, ``score:0.1``) -> (method, weight); a clear error otherwise."""
    method, _, weight = text.partition(":")
    try:
        value = float(weight) if weight else 1.0
    except ValueError:
        value = -1.0
    if method not in ("rrf", "score") or value < 0:
        raise ConfigError(f"fusion {text!r}: expected rrf:WEIGHT or score:WEIGHT with WEIGHT >= 0")
    return method, value


def _fused_ranking(
    clip: list[tuple[int, float]], decoded: list[tuple[int, float]], method: str, weight: float, rrf_k: int
) -> list[int]:
    """CLIP's (id, cosine) list and the decoded (id, log-probability) list fused as the stage fuses them."""
    from ..stages.genid import fuse
    from ..stages.state import Candidate

    candidates = [Candidate(i, str(i), "", scores={}, score=s) for i, s in clip]
    pairs = [(Candidate(i, str(i), "", scores={}, score=0.0), lp) for i, lp in decoded]
    return [c.id for c in fuse(candidates, pairs, method, weight, rrf_k)]


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
    fusions: tuple[tuple[str, float], ...] | list[tuple[str, float]] = DEFAULT_FUSIONS,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, Any]:
    """T->I R@1/5/10 of CLIP alone, each identifier model alone, and CLIP + model under each fusion
    setting, on the captions of ``manifest``'s images that ``index`` holds (a seeded sample of
    ``n_queries``); the fusion picked on one half of the queries is reported on the other half."""
    from ..genid.model import IdentifierModel, check_index
    from ..progress import progress_bar
    from ..reports import machine_info
    from ..stages.presets import open_searcher
    from .retrieval import EvalDataError, load_manifest

    evalset = load_manifest(manifest)
    searcher = open_searcher(index)  # the index's own encoder and search settings
    store = searcher.store
    item_of = {row.key: row.id for row in store.iter_items()}
    pairs = zip(evalset.captions, (evalset.image_keys[o] for o in evalset.caption_image), strict=True)
    queries = [(text, item_of[key]) for text, key in pairs if key in item_of]
    if not queries:
        raise EvalDataError(f"none of {manifest}'s images is in {index}: index them first")
    if n_queries and n_queries < len(queries):
        rng = np.random.default_rng([seed, 73])
        queries = [queries[int(i)] for i in sorted(rng.choice(len(queries), n_queries, replace=False))]
    clip_lists: list[list[tuple[int, float]]] = []
    encode_s = search_s = 0.0
    searcher.encode_query_text(queries[0][0])  # warm-up: the first call's one-off costs are not a query's
    for start in range(0, len(queries), 64):
        texts = [q for q, _ in queries[start : start + 64]]
        t0 = time.perf_counter()
        vecs = np.concatenate([searcher.encode_query_text(t)[0] for t in texts])
        t1 = time.perf_counter()
        hits = searcher.search_vectors(vecs, clip_depth, {})
        search_s += time.perf_counter() - t1
        encode_s += t1 - t0
        clip_lists += [[(h.id, float(h.score)) for h in row] for row in hits]
    targets, n = [t for _, t in queries], len(queries)
    miss = clip_depth + 1
    halves = np.random.default_rng([seed, 74]).permutation(n) % 2  # 0: tuning half, 1: held-out half

    def rank(ranking: list[int], target: int) -> float:
        return ranking.index(target) + 1 if target in ranking else miss

    clip_ranks = np.array([rank([i for i, _ in c], t) for c, t in zip(clip_lists, targets, strict=True)])
    report: dict[str, Any] = {
        "manifest": str(manifest), "index": str(index), "items": len(item_of), "n_queries": n,
        "k": k, "beams": beams, "clip_depth": clip_depth, "rrf_k": rrf_k, "machine": machine_info(),
        "fusion_protocol": "each fusion setting on all queries; the one with the best R@1 (then R@5) on a seeded "
        "tuning half is reported on the other, held-out half beside CLIP there",
        "clip": _recall(clip_ranks)
        | {"encode_ms_per_query": 1000 * encode_s / n, "search_ms_per_query": 1000 * search_s / n},
        "clip_held_out": _recall(clip_ranks[halves == 1]),
        "models": {},
    }  # fmt: skip
    for folder in models:
        model = IdentifierModel.load(folder)
        check = check_index(model.info, store)
        decoded: list[list[tuple[int, float]]] = []
        seconds = 0.0
        with progress_bar(f"decoding ({model.info.scheme})", len(queries), "query", progress) as bar:
            for start in range(0, len(queries), batch_size):
                texts = [q for q, _ in queries[start : start + batch_size]]
                t0 = time.perf_counter()
                decoded += model.retrieve(texts, k=k, beams=beams)
                seconds += time.perf_counter() - t0
                bar.advance(len(texts))
        alone = [rank([i for i, _ in d], t) for d, t in zip(decoded, targets, strict=True)]
        fused: dict[str, dict[str, Any]] = {}
        for method, weight in fusions:
            ranks = np.array([rank(_fused_ranking(c, d, method, weight, rrf_k), t)
                              for c, d, t in zip(clip_lists, decoded, targets, strict=True)])  # fmt: skip
            halves_recall = {"tuning_half": _recall(ranks[halves == 0]), "held_out_half": _recall(ranks[halves == 1])}
            fused[fusion_name(method, weight)] = _recall(ranks) | halves_recall
        entry: dict[str, Any] = {
            "scheme": model.info.scheme, "items_learned": len(model.id_map.ids), "items_added_since": len(check.new),
            "alone": _recall(alone), "fused_with_clip": fused,
            "invalid_outputs": model.invalid, "decode_ms_per_query": 1000 * seconds / n,
            "decode_batch_size": batch_size,
        }  # fmt: skip
        if fused:
            best = max(fused, key=lambda f: (fused[f]["tuning_half"]["R@1"], fused[f]["tuning_half"]["R@5"]))
            entry["selected_fusion"] = {"setting": best, "held_out": fused[best]["held_out_half"],
                                        "clip_held_out": report["clip_held_out"]}  # fmt: skip
        report["models"][str(folder)] = entry
    store.close()
    return report


__all__ = ["DEFAULT_FUSIONS", "fusion_name", "genid_report", "parse_fusion"]
