"""``viewfinder index``: build or update an index from a folder or manifest."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .common import ConfigOpt, console

PRECOMPUTED = ("caption", "rerank")
"""The stages whose work ``--with`` does at index time."""


def index_cmd(
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder (created if missing).")],
    source: Annotated[
        str | None, typer.Argument(help="Folder of images (recursive) or a JSONL manifest (not needed for --check).")
    ] = None,
    config: ConfigOpt = None,
    modality: Annotated[str, typer.Option(help="'image' (default) or 'text' (the captions of a manifest).")] = "image",
    rebuild: Annotated[bool, typer.Option(help="Re-embed everything (e.g. with another encoder).")] = False,
    factory: Annotated[
        str | None,
        typer.Option(help="FAISS index: Flat, IVF, IVFPQ, PQ, HNSW or a factory string (default: the index's own)."),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Decoding worker processes.")] = None,
    engine: Annotated[
        str | None,
        typer.Option(help="Where embedding runs: 'local' (default) or 'ray' (Ray Data: decode tasks, encoder actors)."),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="With --engine ray: the cluster to join (e.g. ray://head:10001, auto).")
    ] = None,
    actors: Annotated[
        int | None, typer.Option(help="With --engine ray: encoder actors (default: one per GPU, else per 2 CPUs).")
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Also write the run's report as JSON here.")] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Only check every file of the index (read-only); exit 1 if any is wrong.")
    ] = False,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Rebuild what is damaged from what is intact (the FAISS file from the stored vectors, a damaged "
            "cache set aside), then index SOURCE if given.",
        ),
    ] = False,
    with_: Annotated[
        str | None,
        typer.Option(
            "--with",
            help="Also compute what later stages need, now (comma-separated): 'rerank' (the preset's matcher's "
            "vision features and ITC embeddings), 'caption' (the preset's captioner's captions).",
        ),
    ] = None,
) -> None:
    """Index a folder or manifest into an on-disk FAISS index (incremental, resumable).

    Without --config and --factory, an existing index keeps the preset and FAISS factory it was built with.
    """
    if check or repair:
        if _health(index, check=check, repair=repair) or source is None:
            return
    if source is None:
        raise typer.BadParameter("give the folder or manifest to index", param_hint="SOURCE")
    if modality not in ("image", "text"):
        raise typer.BadParameter(f"'image' or 'text', got {modality!r}", param_hint="--modality")
    from ...adapters.registry import load_encoder, portable_entry
    from ..api import preset_for_run
    from ..config import preset_summary
    from ..store.fsutil import atomic_write_json
    from ..store.indexer import Indexer

    if engine not in (None, "local", "ray"):
        raise typer.BadParameter(f"'local' or 'ray', got {engine!r}", param_hint="--engine")
    if (address or actors is not None) and engine != "ray":
        raise typer.BadParameter("--address and --actors need --engine ray", param_hint="--address/--actors")
    preset = preset_for_run(
        config, index, factory=factory, num_workers=workers, engine=engine, ray_address=address, ray_actors=actors
    )
    precompute = _stages_to_precompute(with_, preset)  # before any work
    encoder = load_encoder(preset.encoder)
    entry, summary = portable_entry(preset.encoder), preset_summary(preset)
    indexer = Indexer(encoder, preset.index, encoder_entry=entry, preset=summary)
    result = indexer.run(source, index, modality=modality, rebuild=rebuild)  # type: ignore[arg-type]
    atomic_write_json(Path(result.index) / "last_run.json", asdict(result))
    if report:
        atomic_write_json(report, asdict(result))
    console.print(f"indexed {result.source} -> {result.index}", soft_wrap=True)  # whole, even when piped
    table = Table(show_header=False)
    for label, value in [
        ("items in index", result.count),
        ("added", result.added),
        ("re-embedded (changed)", result.reembedded),
        ("removed (gone from source)", result.removed),
        ("dropped (changed, now unreadable)", result.dropped),
        ("unchanged", result.unchanged),
        ("resumed from an interrupted run", result.resumed),
        ("skipped", len(result.skipped)),
        ("seconds", f"{result.seconds:.1f}"),
        ("embedded per second", f"{result.embedded_per_second:.1f}"),
    ]:
        table.add_row(label, str(value))
    console.print(table)
    if result.factory_change:
        console.print(f"  [yellow]FAISS factory changed[/] {result.factory_change}: the FAISS index was rebuilt")
    for where, reason in result.skipped[:20]:
        console.print(f"  [yellow]skipped[/] {where}: {reason}")
    if len(result.skipped) > 20:
        console.print(f"  … and {len(result.skipped) - 20} more (see {Path(result.index) / 'last_run.json'})")
    if precompute:
        _precompute(precompute, preset, index)


def _health(index: Path, *, check: bool, repair: bool) -> bool:
    """``--check`` (print what is wrong; exit 1 if anything is) or ``--repair``. True when the command is done."""
    from ..store.health import check_index, repair_index

    if check:
        report = check_index(index)
        console.print(f"{report.index}: generation {report.generation}, {report.count} items", soft_wrap=True)
        for note in report.notes:
            console.print(f"  note: {note}", soft_wrap=True)
        for problem in report.problems:
            fix = "repairable with --repair" if problem.repairable else "rebuild from the source with --rebuild"
            console.print(f"  [red]{problem.file}[/]: {problem.what} ({fix})", soft_wrap=True)
        if report.ok:
            console.print("  every file checks out")
            return True
        raise typer.Exit(1)
    done = repair_index(index)
    for action in done.actions or ["nothing needed repair"]:
        console.print(f"repaired {done.index}: {action}", soft_wrap=True)
    return False


def _stages_to_precompute(what: str | None, preset: Any) -> list[str]:
    """The stages ``--with`` names, checked against the preset before any work is done: each must be
    one :data:`PRECOMPUTED` names, in the preset, and keep what it computes."""
    stages = list(dict.fromkeys(s.strip() for s in (what or "").split(",") if s.strip()))
    if unknown := sorted(set(stages) - set(PRECOMPUTED)):
        raise typer.BadParameter(f"unknown {unknown}; known: {list(PRECOMPUTED)}", param_hint="--with")
    for name in stages:
        spec = next((s for s in preset.stages if s.name == name), None)
        if spec is None:
            example = "scene-rerank" if name == "rerank" else "scene-caption"
            why = f"preset {preset.name!r} has no {name} stage: pass --config with one (e.g. {example})"
        elif name == "rerank" and not (spec.config.cache or spec.config.embed_cache):
            why = "the preset's rerank stage caches nothing (`cache: false`, `embed_cache: false`)"
        elif name == "caption" and not spec.config.cache:
            why = "the preset's caption stage has `cache: false`, so there is nothing to keep"
        else:
            continue
        raise typer.BadParameter(f"{name}: {why}", param_hint="--with")
    return stages


def _precompute(stages: list[str], preset: Any, index: Path) -> None:
    """Index-time work for later stages (``--with rerank,caption``): fill the rerank caches (vision
    features, ITC embeddings) and the caption cache now, not at the first query."""
    from ..stages.runner import Pipeline
    from ..store.features import precompute_features

    pipeline = Pipeline.from_preset(preset, index=index)
    for name in stages:
        stage: Any = next(s for s in pipeline.stages if s.name == name)
        if name == "rerank":
            lines = _precompute_rerank(stage, pipeline.store, precompute_features, preset.index)
        else:
            lines = [_precompute_captions(stage, pipeline.store, preset.index)]
        for line in lines:
            console.print(line, soft_wrap=True)


def _precompute_rerank(stage: Any, store: Any, precompute: Any, config: Any) -> list[str]:
    source, embeds = stage.features, stage.embeds
    lines = []
    for what, cached in (("features", source), ("ITC embeddings", embeds)):
        if cached.cache is not None:
            report = precompute(store, cached, config=config)
            lines.append(
                f"rerank {what} ({source.matcher.name}): {report.computed} computed, {report.cached} already cached, "
                f"{len(report.failed)} unreadable; {report.bytes_per_item / 1024:.1f} KiB per item"
            )
    return lines


def _precompute_captions(stage: Any, store: Any, config: Any) -> str:
    captioner = stage.captioner
    done = captioner.precompute(store, config=config)
    return (
        f"captions ({captioner.model.name}): {done.computed} computed, {done.cached} already cached, "
        f"{len(done.failed)} unreadable"
    )
