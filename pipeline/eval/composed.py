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

from ...adapters.entries import ConfigError


def composed_report(
    root: Path,
    split: str,
    pipeline: Any,
    *,
    n_queries: int | None = None,
    depth: int = 50,
    progress: bool | None = None,
) -> dict[str, Any]:
    """R@1/5/10 of the pipeline's composed search, examples with their traces' key parts, and every
    query's trace (``traces``: pop it before saving a short report)."""
    from ..progress import progress_bar
    from ..scenes.dataset import load_scene_dataset
    from .retrieval import EvalDataError

    dataset = load_scene_dataset(root)
    composed = [q for q in dataset.queries.get(split, []) if q.type == "composed"]
    if not composed:
        raise EvalDataError(f"{root}: the {split} split has no composed queries")
    composed = composed[:n_queries] if n_queries else composed
    ranks, examples, traces, fallbacks = [], [], [], 0
    start = time.perf_counter()
    with progress_bar("composed queries", len(composed), "query", progress) as bar:
        for q in composed:
            result = pipeline.search(image=dataset.image_path(split, q.reference_id), edit=q.instruction, k=depth + 1)
            keys = [h.key for h in result.hits if h.key != q.reference_id][:depth]
            ranks.append(keys.index(q.target_id) + 1 if q.target_id in keys else depth + 1)
            notes = next((s["notes"] for s in result.trace["steps"] if s["stage"] == "compose"), {})
            fallbacks += bool(notes.get("fallback"))
            example = {"reference_caption": notes.get("reference_caption"), "edit": q.instruction,
                       "query": result.query, "target": q.target_text, "rank": ranks[-1]}  # fmt: skip
            if len(examples) < 8:
                examples.append(example)
            traces.append(example | {"reference": q.reference_id, "target_id": q.target_id, "trace": result.trace})
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
        "traces": traces,
    }


COMPOSED_BASELINES = ("concat",)
"""The model-free composed baseline: the reference's caption and the edit joined as the query."""


def composed_variant_preset(base: Any, spec: str) -> Any:
    """``base`` (a preset with a compose stage) with its compose stage set by ``spec``:

    * ``preset``: the compose stage as the preset has it;
    * ``concat``: no model (the caption and the edit joined);
    * ``MODEL=PROMPT``: that chat model entry and prompt apply the edit;
    * either + ``+ref:W``: fuse the reference image's vector into the query with weight ``W`` (0:
      the edited description alone) instead of the preset's ``reference_weight``.
    """
    from dataclasses import replace

    from ..stages.registry import stage_names

    head, plus, extra = spec.partition("+")
    weight = None
    if plus:
        name, _, value = extra.partition(":")
        try:
            weight = float(value) if name == "ref" else -1.0
        except ValueError:
            weight = -1.0
        if weight < 0:
            raise ConfigError(f"variant {spec!r}: the only add-on is '+ref:W' with a weight W >= 0, e.g. +ref:0.5")
    if head not in ("concat", "preset") and ("=" not in head or not all(head.partition("=")[::2])):
        raise ConfigError(f"variant {spec!r}: expected preset, concat or MODEL=PROMPT (optionally +ref:W)")
    composing = stage_names(composes=True)
    if not any(s.name in composing for s in base.stages):
        raise ConfigError(f"the preset {base.name!r} has no compose stage: use one with it (e.g. agent)")
    stages = []
    for stage in base.stages:
        config = stage.config
        if stage.name in composing and head != "preset":
            model, _, prompt = head.partition("=")
            config = replace(config, model="none") if head == "concat" else replace(config, model=model, prompt=prompt)
        elif stage.name == "preselect" and weight is not None:
            config = replace(config, reference_weight=weight)
        stages.append(replace(stage, config=config))
    return replace(base, name=spec, stages=stages)


def composed_experiment(
    root: Path,
    split: str,
    index: Path,
    variants: list[str],
    *,
    preset: Any = "agent",
    n_queries: int | None = None,
    progress: bool | None = None,
    encoder: Any = None,
) -> dict[str, Any]:
    """:func:`composed_report` for each variant (:func:`composed_variant_preset` of ``preset``) on
    the same composed queries and index. ``preset``: a name, file or loaded preset; ``encoder``: the
    index's encoder when already loaded."""
    from ...adapters.registry import load_encoder
    from ..stages.presets import preset_for_index
    from ..stages.runner import Pipeline
    from ..store.index_store import IndexStore

    with IndexStore.open(index) as store:
        base = preset_for_index(preset, store)  # the preset, with the index's own encoder
    encoder = encoder or load_encoder(base.encoder)
    out: dict[str, Any] = {"split": split, "preset": base.name, "variants": {}}
    for spec in variants:
        pipeline = Pipeline.from_preset(composed_variant_preset(base, spec), index=index, encoder=encoder)
        report = composed_report(root, split, pipeline, n_queries=n_queries, progress=progress)
        out["n_queries"] = report["n_queries"]
        out["variants"][spec] = report
    return out


__all__ = ["COMPOSED_BASELINES", "composed_experiment", "composed_report", "composed_variant_preset"]
