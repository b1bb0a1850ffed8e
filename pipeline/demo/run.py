"""``viewfinder demo``: the offline tour. Generates a scene collection, indexes it with the bundled
model, runs example queries, writes a contact sheet and an evaluation summary. A second run reuses
the collection and the index."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..reports import save_report
from ..store.search import SearchResult
from .agent import AgentDemo, run_agent_demo
from .contact_sheet import SheetRow, render_contact_sheet

logger = logging.getLogger(__name__)

DEMO_SEED = 2026
"""Seed of the demo collection: different from the training data's seed."""


RERANK_PRESET = "scene-rerank"
"""The packaged preset whose reranker the demo shows beside a preset without one."""


def default_cache() -> Path:
    from ...adapters.package_file import cache_root

    return cache_root() / "demo"


@dataclass
class DemoQuery:
    label: str
    text: str | None = None
    image_key: str | None = None
    target_key: str | None = None
    relevant: tuple[str, ...] = ()


@dataclass
class DemoResult:
    cache: Path
    index_dir: Path
    contact_sheet: Path
    report_path: Path
    report: dict[str, Any]
    searches: list[tuple[DemoQuery, SearchResult]]
    seconds: dict[str, float]
    reranked: list[tuple[DemoQuery, SearchResult, SearchResult]] = field(default_factory=list)
    """(query, preselect-only result, reranked result) for the text queries, when a reranker fits."""
    rerank_preset: str | None = None
    agent: AgentDemo | None = None
    """The agent part (normalisation, feedback rounds), when the agent preset fits the index."""
    agent_problem: str | None = None
    """Why the agent part did not run (e.g. the language model could not be fetched)."""


def _pick_queries(dataset: Any, split: str, rng: np.random.Generator) -> list[DemoQuery]:
    by_type: dict[str, list[Any]] = {}
    for q in dataset.queries.get(split, []):
        by_type.setdefault(q.type, []).append(q)
    picks: list[DemoQuery] = []
    for q in [by_type["full"][i] for i in rng.choice(len(by_type["full"]), 3, replace=False)]:
        picks.append(DemoQuery(f"full: {q.text}", text=q.text, target_key=q.target_id))
    partial = by_type.get("partial", [])
    for wanted in ({"shape"}, {"colour", "position"}):
        match = [q for q in partial if set(q.attributes) == wanted]
        if match:
            q = match[int(rng.integers(len(match)))]
            picks.append(DemoQuery(f"partial: {q.text}", text=q.text, relevant=tuple(q.relevant_ids)))
    if composed := by_type.get("composed"):
        q = composed[int(rng.integers(len(composed)))]
        picks.append(DemoQuery(f"described edit target: {q.target_text}", text=q.target_text, target_key=q.target_id))
        picks.append(
            DemoQuery("image query: scenes like this one", image_key=q.reference_id, target_key=q.reference_id)
        )
    return picks


def _cached_report(path: Path, index_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The evaluation of an earlier run, if the index and the encoder are still the same."""
    from ..store.index_store import IndexStore

    if not path.is_file() or not IndexStore.exists(index_dir):
        return None
    report = json.loads(path.read_text())
    manifest = IndexStore.open(index_dir).manifest
    same = report.get("index_generation") == manifest.generation and report["encoder"]["fingerprint"] == fingerprint
    return report if same and manifest.encoder_fingerprint == fingerprint else None


def run_demo(cache: Path | None = None, preset_name: str = "default", n_scenes: int = 2000, k: int = 8) -> DemoResult:
    from ...adapters.registry import load_encoder, portable_entry
    from ..eval.scenes import evaluate_scene_split
    from ..reports import machine_info
    from ..scenes.dataset import ensure_scene_dataset, is_scene_dataset, load_scene_dataset
    from ..scenes.generator import SceneGeneratorConfig
    from ..stages.presets import load_preset
    from ..stages.runner import Pipeline
    from ..store.index_store import IndexStore

    cache = (cache or default_cache()).expanduser()
    seconds: dict[str, float] = {}
    t0 = t_start = time.perf_counter()
    data_root = cache / f"scenes-{DEMO_SEED}-{n_scenes}"
    generated = not is_scene_dataset(data_root)
    ensure_scene_dataset(
        data_root, SceneGeneratorConfig(seed=DEMO_SEED), n_train=0, n_val=0, n_test=n_scenes, n_compositional=0
    )
    seconds["generate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    preset = load_preset(preset_name)
    encoder = load_encoder(preset.encoder)
    seconds["load_model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    index_dir = cache / f"index-{preset.name}"
    report_path = cache / f"eval-{preset.name}.json"
    report = _cached_report(report_path, index_dir, encoder.fingerprint)
    if IndexStore.exists(index_dir) and IndexStore.open(index_dir).manifest.encoder_fingerprint != encoder.fingerprint:
        logger.info("the demo index %s was built with another encoder version: rebuilding it", index_dir)
        shutil.rmtree(index_dir)  # the demo's own cache: an index of another encoder is rebuilt, not an error
        report = None
    evaluated = report is None
    _index_with_preset(preset, encoder, data_root / "test.jsonl", index_dir)
    if report is None:
        report = evaluate_scene_split(
            data_root, "test", encoder, preset.index, cache, portable_entry(preset.encoder), index_dir=index_dir
        )
        report["command"] = f"viewfinder demo (preset {preset.name})"
        report["index_generation"] = IndexStore.open(index_dir).manifest.generation
        save_report(report, report_path)
    seconds["index_and_eval"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    dataset = load_scene_dataset(data_root)
    pipeline = Pipeline.from_preset(preset, index=index_dir, encoder=encoder)
    searches: list[tuple[DemoQuery, SearchResult]] = []
    rows: list[SheetRow] = []
    for q in _pick_queries(dataset, "test", np.random.default_rng(DEMO_SEED)):
        image = dataset.image_path("test", q.image_key) if q.image_key else None
        result = pipeline.search(q.text, k=k) if image is None else pipeline.search(image=image, k=k)
        searches.append((q, result))
        rows.append(
            SheetRow(
                q.label,
                [h.path for h in result.hits],
                [h.key for h in result.hits],
                {q.target_key} if q.target_key else set(),
                set(q.relevant),
                str(image) if image else None,
            )
        )
    reranked, rerank_name = _rerank_queries(preset, index_dir, encoder, searches, k)
    for q, before, after in reranked:
        previous = {h.key: h.rank for h in before.hits}
        rows.append(
            SheetRow(
                f"reranked ({rerank_name}): {q.text}",
                [h.path for h in after.hits],
                [h.key for h in after.hits],
                {q.target_key} if q.target_key else set(),
                set(q.relevant),
                previous_ranks=previous,
            )
        )
    seconds["queries"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    agent, agent_problem = _agent_part(preset, data_root, index_dir, encoder, k)
    if agent is not None:
        rows.extend(_agent_rows(agent))
        seconds["agent"] = time.perf_counter() - t0
    sheet = render_contact_sheet(rows, cache / "contact_sheet.png")
    seconds["total"] = time.perf_counter() - t_start
    timings = {
        "command": f"viewfinder demo (preset {preset.name}, {n_scenes} scenes)",
        "seconds": seconds,
        "generated_collection": generated,
        "indexed_and_evaluated": evaluated,
        "agent_part": agent is not None,
        "machine": machine_info(),
    }
    save_report(timings, cache / "demo-timings.json")
    return DemoResult(
        cache, index_dir, sheet, report_path, report, searches, seconds, reranked, rerank_name, agent, agent_problem
    )


def _index_with_preset(preset: Any, encoder: Any, manifest: Path, index_dir: Path) -> None:
    """Index the demo collection as ``viewfinder index`` does, recording the preset in the index (so
    ``Pipeline.from_preset(index=...)`` and ``viewfinder search --index`` run its stages). Incremental:
    an index that is there already only gets the preset recorded, when it lacks it."""
    from ...adapters.registry import portable_entry
    from ..config import preset_summary
    from ..store.index_store import IndexStore
    from ..store.indexer import Indexer

    summary = preset_summary(preset)
    if IndexStore.exists(index_dir):
        with IndexStore.open(index_dir) as store:
            if store.manifest.preset == summary:
                return
    indexer = Indexer(encoder, preset.index, encoder_entry=portable_entry(preset.encoder), preset=summary)
    indexer.run(manifest, index_dir)


def _agent_part(
    preset: Any, data_root: Path, index_dir: Path, encoder: Any, k: int
) -> tuple[AgentDemo | None, str | None]:
    """The agent demo, or why it cannot run here (another encoder, no language model)."""
    from ...errors import Error
    from ..stages.presets import load_preset
    from .agent import AGENT_PRESET

    if load_preset(AGENT_PRESET).encoder != preset.encoder:
        return None, f"the {AGENT_PRESET} preset runs on another encoder than {preset.name}"
    try:
        return run_agent_demo(data_root, index_dir, encoder, k=k), None
    except (Error, OSError) as exc:  # e.g. the default LLM could not be fetched (a ChatModelLoadError)
        logger.warning("the agent part of the demo did not run: %s", exc)
        return None, str(exc)


def _agent_rows(agent: AgentDemo) -> list[SheetRow]:
    def row(label: str, result: SearchResult, target: str) -> SheetRow:
        return SheetRow(label, [h.path for h in result.hits], [h.key for h in result.hits], {target})

    rows = [row(f"normalised: {agent.normalised.query}", agent.normalised.result, agent.request_target)]
    for i, r in enumerate(agent.rounds):
        rows.append(row(f"feedback round {i}: {r.query}", r.result, agent.partial_target))
    return rows


def _rerank_queries(
    preset: Any, index_dir: Path, encoder: Any, searches: list[tuple[DemoQuery, SearchResult]], k: int
) -> tuple[list[tuple[DemoQuery, SearchResult, SearchResult]], str | None]:
    """The text queries again through a pipeline that reranks: the preset itself when it has a rerank
    stage (its preselect-only result is the "before"), else the packaged ``scene-rerank`` when it sits
    on the same encoder. Empty when neither fits."""
    from ..stages.presets import load_preset
    from ..stages.runner import Pipeline

    if any(spec.name == "rerank" for spec in preset.stages):
        rerank_preset = preset
    else:
        rerank_preset = load_preset(RERANK_PRESET)
        if rerank_preset.encoder != preset.encoder:
            return [], None
    pipeline = Pipeline.from_preset(rerank_preset, index=index_dir, encoder=encoder)
    plain = None
    if rerank_preset is preset:  # the shown results are already reranked: compare with preselect alone
        preselect_only = replace(preset, stages=[s for s in preset.stages if s.name == "preselect"])
        plain = Pipeline.from_preset(preselect_only, index=index_dir, encoder=encoder)
    out = []
    for q, before in searches:
        if q.text is None:
            continue
        out.append((q, plain.search(q.text, k=k) if plain else before, pipeline.search(q.text, k=k)))
    return out, rerank_preset.name
