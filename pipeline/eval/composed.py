"""Composed queries (a reference image + an edit in words) through a pipeline, on the scene benchmark.

Each of the split's composed queries runs as ``Pipeline.search(image=reference, edit=instruction)``
(a preset with a ``compose`` stage: caption the reference, apply the edit with the language model,
search, rerank). The target is the edited scene; the reference itself is never counted as an answer.
R@1/5/10 and the median rank (among the top ``depth`` hits; past them counts as worse) are reported
beside the dual-encoder baselines of ``viewfinder eval`` (image only, text only, image + text, and
the target's own description as the upper bound), computed on the same index.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np


def composed_report(
    root: Path,
    split: str,
    pipeline: Any,
    *,
    n_queries: int | None = None,
    depth: int = 50,
    progress: bool | None = None,
) -> dict[str, Any]:
    """R@1/5/10 of the pipeline's composed search, and examples with their traces' key parts."""
    from ..progress import progress_bar
    from ..scenes.dataset import load_scene_dataset

    dataset = load_scene_dataset(root)
    composed = [q for q in dataset.queries.get(split, []) if q.type == "composed"]
    if not composed:
        raise ValueError(f"{root}: the {split} split has no composed queries")
    composed = composed[:n_queries] if n_queries else composed
    ranks, examples, fallbacks = [], [], 0
    start = time.perf_counter()
    with progress_bar("composed queries", len(composed), "query", progress) as bar:
        for q in composed:
            result = pipeline.search(image=dataset.image_path(split, q.reference_id), edit=q.instruction, k=depth + 1)
            keys = [h.key for h in result.hits if h.key != q.reference_id][:depth]
            ranks.append(keys.index(q.target_id) + 1 if q.target_id in keys else depth + 1)
            notes = next((s["notes"] for s in result.trace["steps"] if s["stage"] == "compose"), {})
            fallbacks += bool(notes.get("fallback"))
            if len(examples) < 8:
                examples.append(
                    {"reference_caption": notes.get("reference_caption"), "edit": q.instruction,
                     "query": result.query, "target": q.target_text, "rank": ranks[-1]}
                )  # fmt: skip
            bar.advance(1)
    r = np.array(ranks)
    return {
        "split": split,
        "n_queries": len(composed),
        "pipeline": pipeline.name,
        "stages": [s.name for s in pipeline.stages],
        "R@1": float((r <= 1).mean()),
        "R@5": float((r <= 5).mean()),
        "R@10": float((r <= 10).mean()),
        "median_rank": float(np.median(r)),
        "fallback_rate": fallbacks / len(composed),
        "seconds_per_query": (time.perf_counter() - start) / len(composed),
        "examples": examples,
    }


__all__ = ["composed_report"]
