"""The agent's query modes in ``viewfinder eval`` on a scene benchmark folder: composed queries and
dialogue search, through the preset, beside their baselines, in the same report.

* composed (when the preset has a ``compose`` stage): R@1/5/10 of the preset and of the model-free
  ``concat`` baseline (:mod:`.composed`); the dual encoder's baselines are the report's
  ``query_sets.composed``;
* dialogue: Hits@10 per round and BRI of the questioner/reformulator variants (:mod:`.dialogue`),
  with the random-questions and concatenation baselines. The preset's query-writing stages
  (normalise, compose, rewrite) are left out: in a dialogue the reformulator writes the query.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any


def agent_scene_report(
    root: Path,
    split: str,
    preset: Any,
    index: Path,
    *,
    dialogue_variants: list[str],
    dialogue_queries: int = 100,
    rounds: int = 10,
    composed_queries: int | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """``{"composed": ..., "dialogue": ...}`` for ``preset`` (a loaded preset) over ``index``."""
    from ...adapters.registry import load_encoder
    from ..stages.presets import preset_for_index
    from ..stages.registry import stage_names
    from ..stages.runner import Pipeline
    from ..store.index_store import IndexStore
    from .composed import COMPOSED_BASELINES, composed_experiment
    from .dialogue import dialogue_report

    with IndexStore.open(index) as store:
        base = preset_for_index(preset, store)
    encoder = load_encoder(base.encoder)
    out: dict[str, Any] = {}
    if set(stage_names(composes=True)) & {s.name for s in base.stages}:
        composed = composed_experiment(root, split, index, ["preset", *COMPOSED_BASELINES], preset=base,
                                       n_queries=composed_queries, progress=progress, encoder=encoder)  # fmt: skip
        for entry in composed["variants"].values():
            entry.pop("traces", None)
        out["composed"] = composed
    llm_stages = stage_names(uses_llm=True)
    searcher = replace(base, stages=[s for s in base.stages if s.name not in llm_stages])
    pipeline = Pipeline.from_preset(searcher, index=index, encoder=encoder)
    dialogue = dialogue_report(root, split, pipeline, dialogue_variants, n_queries=dialogue_queries, rounds=rounds,
                               progress=progress)  # fmt: skip
    out["dialogue"] = dialogue | {"stages": [s.name for s in pipeline.stages]}
    return out


__all__ = ["agent_scene_report"]
