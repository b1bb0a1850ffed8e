"""Scene-benchmark figures of a reranker, beside the dual encoder's own in the same report.

The protocol follows LAVIS's BLIP-2 retrieval evaluation: the dual encoder preselects the top
``k`` images for each caption, the matcher rescores them (ITM + ITC by default) and the target's
new rank is counted; targets outside the top ``k`` keep their dual-encoder rank. Binding and
relation swaps are scored pairwise with the same final score, and partial queries by the share of
the reranked top 10 that have the named attribute.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...adapters.base import ImageTextEncoder, ImageTextMatcher

logger = logging.getLogger(__name__)


@dataclass
class RerankWeights:
    """How ITM and ITC combine into the final score (as in the rerank stage)."""

    itm: float = 1.0
    itc: float = 1.0


def matcher_scores(
    matcher: ImageTextMatcher, features: torch.Tensor, texts: list[str], weights: RerankWeights
) -> dict[str, np.ndarray]:
    """``itm``, ``itc`` and ``final`` scores of (features[i], texts[i]) pairs (or one text for all)."""
    s = matcher.match(features, texts)
    return {"itm": s.itm, "itc": s.itc, "final": weights.itm * s.itm + weights.itc * s.itc}


def rerank_ranks(
    clip_scores: np.ndarray,
    texts: list[str],
    targets: np.ndarray,
    features: torch.Tensor,
    matcher: ImageTextMatcher,
    k: int,
    weights: RerankWeights,
    progress: bool | None = None,
) -> tuple[np.ndarray, list[list[int]]]:
    """1-based target ranks after reranking each query's top ``k``, and each query's reranked top ``k``.

    ``clip_scores`` is (Q, N) dual-encoder similarity, ``features`` (N, ...) the matcher's features.
    """
    from ..progress import progress_bar

    order = np.argsort(-clip_scores, axis=1, kind="stable")  # (Q, N)
    ranks = np.empty(len(texts), dtype=np.int64)
    reranked: list[list[int]] = []
    with progress_bar("reranking", len(texts), "query", progress) as bar:
        for q, text in enumerate(texts):
            top = order[q, :k]
            final = matcher_scores(matcher, features[torch.from_numpy(top)], [text], weights)["final"]
            new = top[np.argsort(-final, kind="stable")]
            reranked.append(new.tolist())
            hit = np.flatnonzero(new == targets[q])
            ranks[q] = hit[0] + 1 if len(hit) else int(np.flatnonzero(order[q] == targets[q])[0]) + 1
            bar.advance(1)
    return ranks, reranked


def rerank_scene_report(
    *,
    keys: list[str],
    image_vecs: np.ndarray,
    images: list[Any],
    captions: list[tuple[str, str]],
    queries: list[Any],
    scenes: dict[str, Any],
    encoder: ImageTextEncoder,
    matcher: ImageTextMatcher,
    k: int = 16,
    max_queries: int | None = None,
    weights: RerankWeights | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """The reranker's figures on one scene split.

    ``keys``/``image_vecs``/``images`` are the split's images (ids, dual-encoder vectors, PIL images);
    ``captions`` are (text, target key) pairs; ``queries`` the split's query set; ``scenes`` id -> scene.
    """
    from ..scenes.metrics import partial_query_report, swap_accuracy
    from .retrieval import recall_from_ranks

    weights = weights or RerankWeights()
    start = time.perf_counter()
    transform = matcher.image_transform
    features = torch.cat(
        [
            matcher.image_features(torch.stack([transform(im) for im in images[i : i + 256]]))
            for i in range(0, len(images), 256)
        ]
    )  # (N, *feature_shape)
    position = {key: i for i, key in enumerate(keys)}
    rng = np.random.default_rng(0)
    if max_queries is not None and len(captions) > max_queries:
        captions = [captions[i] for i in sorted(rng.choice(len(captions), max_queries, replace=False))]
    texts = [t for t, _ in captions]
    targets = np.array([position[key] for _, key in captions])
    clip_scores = encoder.encode_texts(texts) @ image_vecs.T  # (Q, N)
    from .retrieval import ranks_of_targets

    clip_ranks = ranks_of_targets(clip_scores, targets)
    ranks, _ = rerank_ranks(clip_scores, texts, targets, features, matcher, k, weights, progress)
    report: dict[str, Any] = {
        "matcher": getattr(matcher, "name", "?"),
        "matcher_fingerprint": matcher.fingerprint,
        "k": k,
        "weights": {"itm": weights.itm, "itc": weights.itc},
        "t2i": {
            "n_queries": len(texts),
            "reranked": recall_from_ranks(ranks, (1, 5, 10)),
            "dual_encoder_same_queries": recall_from_ranks(clip_ranks, (1, 5, 10)),
        },
    }
    by_type: dict[str, list[Any]] = {}
    for q in queries:
        by_type.setdefault(q.type, []).append(q)
    for kind in ("binding_swap", "relation_swap"):
        swaps = [q for q in by_type.get(kind, []) if q.image_id in position]
        if not swaps:
            continue
        feats = features[torch.tensor([position[q.image_id] for q in swaps])]
        pos = matcher_scores(matcher, feats, [q.positive for q in swaps], weights)
        neg = matcher_scores(matcher, feats, [q.negative for q in swaps], weights)
        entry: dict[str, Any] = {"n_queries": len(swaps), "chance": 0.5}
        for part in ("final", "itm", "itc"):
            entry["accuracy" if part == "final" else f"accuracy_{part}_only"] = swap_accuracy(pos[part], neg[part])
        report[kind] = entry
    if partial := by_type.get("partial"):
        scores = encoder.encode_texts([q.text for q in partial]) @ image_vecs.T  # (Q, N)
        targets_p = np.array([position[q.target_id] for q in partial])
        _, reranked = rerank_ranks(scores, [q.text for q in partial], targets_p, features, matcher, max(k, 10), weights)
        report["partial"] = partial_query_report(partial, [[keys[j] for j in r] for r in reranked], scenes, k=10)
    report["seconds"] = time.perf_counter() - start
    return report
