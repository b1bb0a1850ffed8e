"""Scene-benchmark figures of a reranker, beside the dual encoder's own in the same report.

The protocol follows LAVIS's BLIP-2 retrieval evaluation, with the rerank stage's own rule and
settings: the dual encoder preselects the top ``k`` images for each caption, the matcher's ITC
rescores them, its ITM the best ``itm_k`` of those (final = ITM + ITC by default), and the target's
new rank is counted; targets outside the top ``k`` keep their dual-encoder rank. Binding and
relation swaps are scored pairwise with the same final score, and partial queries by the share of
the reranked top 10 that have the named attribute.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from ...adapters.base import ImageTextEncoder, ImageTextMatcher, itc_scores
from ..stages.rerank import RerankConfig, rerank_order

logger = logging.getLogger(__name__)


def pair_scores(
    matcher: ImageTextMatcher,
    features: torch.Tensor,
    texts: list[str],
    clip: np.ndarray,
    config: RerankConfig,
) -> dict[str, np.ndarray]:
    """``itm``, ``itc`` and ``final`` scores of (features[i], texts[i]) pairs, ``clip`` being their
    dual-encoder similarity (fused in with the stage's ``preselect_weight``)."""
    s = matcher.match(features, texts)
    final = config.itm_weight * s.itm + config.itc_weight * s.itc + config.preselect_weight * clip
    return {"itm": s.itm, "itc": s.itc, "final": final}


def rerank_ranks(
    clip_scores: np.ndarray,
    texts: list[str],
    targets: np.ndarray,
    features: torch.Tensor,
    image_embeds: torch.Tensor,
    matcher: ImageTextMatcher,
    config: RerankConfig,
    progress: bool | None = None,
) -> tuple[np.ndarray, list[list[int]]]:
    """1-based target ranks after the rerank stage's rule (:func:`~..stages.rerank.rerank_order`) on
    each query's top ``config.k``, and each query's reranked top ``k``.

    ``clip_scores`` is (Q, N) dual-encoder similarity; ``features`` (N, ...) the matcher's vision
    features and ``image_embeds`` (N, Q, D) its ITC embeddings of the N images.
    """
    from ..progress import progress_bar

    order = np.argsort(-clip_scores, axis=1, kind="stable")  # (Q, N)
    ranks = np.empty(len(texts), dtype=np.int64)
    reranked: list[list[int]] = []
    text_embeds = torch.cat([matcher.text_embeds(texts[i : i + 256]) for i in range(0, len(texts), 256)])
    with progress_bar("reranking", len(texts), "query", progress) as bar:
        for q, text in enumerate(texts):
            top = order[q, : config.k]
            itc = itc_scores(image_embeds[torch.from_numpy(top)], text_embeds[q])

            def itm(positions: np.ndarray, top: np.ndarray = top, text: str = text) -> np.ndarray:
                return matcher.itm(features[torch.from_numpy(top[positions])], text)

            new = top[rerank_order(itc, clip_scores[q, top], itm, config)[0]]
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
    config: RerankConfig | None = None,
    max_queries: int | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """The reranker's figures on one scene split.

    ``keys``/``image_vecs``/``images`` are the split's images (ids, dual-encoder vectors, PIL images);
    ``captions`` are (text, target key) pairs; ``queries`` the split's query set; ``scenes`` id -> scene.
    """
    from ..scenes.metrics import partial_query_report, swap_accuracy
    from .retrieval import recall_from_ranks

    config = config or RerankConfig()
    start = time.perf_counter()
    transform = matcher.image_transform
    features = torch.cat(
        [
            matcher.image_features(torch.stack([transform(im) for im in images[i : i + 256]]))
            for i in range(0, len(images), 256)
        ]
    )  # (N, *feature_shape)
    image_embeds = matcher.image_embeds(features)  # (N, Q, D)
    position = {key: i for i, key in enumerate(keys)}
    rng = np.random.default_rng(0)
    if max_queries is not None and len(captions) > max_queries:
        captions = [captions[i] for i in sorted(rng.choice(len(captions), max_queries, replace=False))]
    texts = [t for t, _ in captions]
    targets = np.array([position[key] for _, key in captions])
    clip_scores = encoder.encode_texts(texts) @ image_vecs.T  # (Q, N)
    from .retrieval import ranks_of_targets

    clip_ranks = ranks_of_targets(clip_scores, targets)
    ranks, _ = rerank_ranks(clip_scores, texts, targets, features, image_embeds, matcher, config, progress)
    report: dict[str, Any] = {
        "matcher": getattr(matcher, "name", "?"),
        "matcher_fingerprint": matcher.fingerprint,
        "k": config.k,
        "itm_k": config.itm_k,
        "weights": {"itm": config.itm_weight, "itc": config.itc_weight, "preselect": config.preselect_weight},
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
        rows = [position[q.image_id] for q in swaps]
        feats, vecs = features[torch.tensor(rows)], image_vecs[rows]
        clip_pos = (encoder.encode_texts([q.positive for q in swaps]) * vecs).sum(1)
        clip_neg = (encoder.encode_texts([q.negative for q in swaps]) * vecs).sum(1)
        pos = pair_scores(matcher, feats, [q.positive for q in swaps], clip_pos, config)
        neg = pair_scores(matcher, feats, [q.negative for q in swaps], clip_neg, config)
        entry: dict[str, Any] = {"n_queries": len(swaps), "chance": 0.5}
        for part in ("final", "itm", "itc"):
            entry["accuracy" if part == "final" else f"accuracy_{part}_only"] = swap_accuracy(pos[part], neg[part])
        report[kind] = entry
    if partial := by_type.get("partial"):
        scores = encoder.encode_texts([q.text for q in partial]) @ image_vecs.T  # (Q, N)
        targets_p = np.array([position[q.target_id] for q in partial])
        wide = replace(config, k=max(config.k, 10))
        _, reranked = rerank_ranks(scores, [q.text for q in partial], targets_p, features, image_embeds, matcher, wide)
        report["partial"] = partial_query_report(partial, [[keys[j] for j in r] for r in reranked], scenes, k=10)
    report["seconds"] = time.perf_counter() - start
    return report
