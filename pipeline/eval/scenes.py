"""Scene-benchmark evaluation beyond Recall@K: partial queries, binding and relation swaps,
and composed queries (reference image + edit), for a dual encoder.

Composed queries get the dual-encoder baselines that composed-image-retrieval papers report
(the reference image alone, the edit text alone, their sum, and the target's own description as
an upper bound); the reference image is left out of its own ranking, as in that protocol.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ...adapters.base import ImageCaptioner, ImageTextEncoder, ImageTextMatcher
from ..config import IndexConfig
from ..stages.rerank import RerankConfig
from .retrieval import (
    EvalDataError,
    evaluate_retrieval,
    index_evalset,
    load_manifest,
    ranks_of_targets,
    recall_from_ranks,
)

logger = logging.getLogger(__name__)


def _ranked_ids(scores: np.ndarray, keys: list[str]) -> list[list[str]]:
    order = np.argsort(-scores, axis=1, kind="stable")  # (Q, N)
    return [[keys[j] for j in row] for row in order]


def evaluate_scene_split(
    root: Path,
    split: str,
    encoder: ImageTextEncoder,
    index_config: IndexConfig,
    work_dir: Path,
    encoder_entry: dict[str, Any] | None = None,
    index_dir: Path | None = None,
    matcher: ImageTextMatcher | None = None,
    rerank: RerankConfig | None = None,
    rerank_queries: int | None = None,
    progress: bool | None = None,
    captioner: ImageCaptioner | None = None,
) -> dict[str, Any]:
    """Full-description Recall@K both ways plus every query set of ``split``; with a ``matcher``, the
    same figures after the rerank stage's rule (settings ``rerank``) on the dual encoder's candidates
    (in ``report["rerank"]``); with a ``captioner``, its caption F1 on the split's scenes (in
    ``report["captioning"]``)."""
    from ..scenes.dataset import load_scene_dataset
    from ..scenes.metrics import partial_query_report, swap_accuracy

    dataset = load_scene_dataset(root)
    if split not in dataset.scenes:
        raise EvalDataError(f"split {split!r} not in {root}; splits: {sorted(dataset.scenes)}")
    evalset = load_manifest(root / f"{split}.jsonl")  # the whole manifest is this split
    evalset.name, evalset.split = f"scenes:{root.name}", split
    report = evaluate_retrieval(
        evalset, encoder, index_config, work_dir, encoder_entry=encoder_entry, index_dir=index_dir
    )
    keys, image_vecs = index_evalset(evalset, encoder, index_config, work_dir, encoder_entry, index_dir)  # no-op re-run
    position = {k: i for i, k in enumerate(keys)}
    scenes = {k: dataset.scenes[split][k] for k in keys}
    queries = dataset.queries.get(split, [])
    by_type: dict[str, list[Any]] = {}
    for q in queries:
        by_type.setdefault(q.type, []).append(q)

    sets: dict[str, Any] = {}
    if partial := by_type.get("partial"):
        scores = encoder.encode_texts([q.text for q in partial]) @ image_vecs.T  # (Q, N)
        sets["partial"] = partial_query_report(partial, _ranked_ids(scores, keys), scenes, k=10)
    for kind in ("binding_swap", "relation_swap"):
        if swaps := [q for q in by_type.get(kind, []) if q.image_id in position]:
            img = image_vecs[[position[q.image_id] for q in swaps]]  # (Q, D)
            pos = (encoder.encode_texts([q.positive for q in swaps]) * img).sum(1)
            neg = (encoder.encode_texts([q.negative for q in swaps]) * img).sum(1)
            entry: dict[str, Any] = {"n_queries": len(swaps), "accuracy": swap_accuracy(pos, neg), "chance": 0.5}
            if kind == "binding_swap":
                for attr in sorted({q.swapped for q in swaps}):
                    mask = np.array([q.swapped == attr for q in swaps])
                    entry[f"accuracy_{attr}_swapped"] = swap_accuracy(pos[mask], neg[mask])
            sets[kind] = entry
    if composed := [q for q in by_type.get("composed", []) if q.reference_id in position and q.target_id in position]:
        ref = image_vecs[[position[q.reference_id] for q in composed]]  # (Q, D)
        edit = encoder.encode_texts([q.instruction for q in composed])  # (Q, D)
        oracle = encoder.encode_texts([q.target_text for q in composed])  # (Q, D)
        summed = ref + edit
        summed /= np.linalg.norm(summed, axis=1, keepdims=True)
        targets = np.array([position[q.target_id] for q in composed])
        refs = np.array([position[q.reference_id] for q in composed])
        baselines = {}
        for name, queries_vec in (("image_only", ref), ("text_only", edit), ("image_plus_text", summed)):
            scores = queries_vec @ image_vecs.T  # (Q, N)
            scores[np.arange(len(refs)), refs] = -np.inf  # the reference is not an answer
            ranks = ranks_of_targets(scores, targets)
            baselines[name] = {**recall_from_ranks(ranks, (1, 5, 10, 50)), "median_rank": float(np.median(ranks))}
        ranks = ranks_of_targets(oracle @ image_vecs.T, targets)
        baselines["target_description_upper_bound"] = {
            **recall_from_ranks(ranks, (1, 5, 10, 50)),
            "median_rank": float(np.median(ranks)),
        }
        sets["composed"] = {"n_queries": len(composed), "baselines": baselines}
    report["query_sets"] = sets
    if captioner is None and matcher is None:
        return report
    from ..store.images import load_image

    key_path = dict(zip(evalset.image_keys, evalset.image_paths, strict=True))
    images = [load_image(key_path[key]) for key in keys]  # (read once for the captioner and the matcher)
    captions = [(text, evalset.image_keys[i]) for text, i in zip(evalset.captions, evalset.caption_image, strict=True)]
    if captioner is not None:
        from .captions import caption_scene_report

        truth = {key: text for text, key in captions}  # one of each image's captions
        report["captioning"] = caption_scene_report(
            images, [scenes[k] for k in keys], [truth[k] for k in keys], captioner, progress=progress
        )
    if matcher is not None:
        from .rerank import rerank_scene_report

        report["rerank"] = rerank_scene_report(
            keys=keys,
            image_vecs=image_vecs,
            images=images,
            captions=[c for c in captions if c[1] in position],
            queries=queries,
            scenes=scenes,
            encoder=encoder,
            matcher=matcher,
            config=rerank,
            max_queries=rerank_queries,
            progress=progress,
        )
    return report
