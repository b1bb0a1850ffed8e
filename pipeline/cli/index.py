"""``viewfinder index``: build or update an index from a folder or manifest."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .common import ConfigOpt, console, fail, user_errors


def index_cmd(
    source: Annotated[str, typer.Argument(help="Folder of images (recursive) or a JSONL manifest.")],
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder (created if missing).")],
    config: ConfigOpt = None,
    modality: Annotated[str, typer.Option(help="'image' (default) or 'text' (the captions of a manifest).")] = "image",
    rebuild: Annotated[bool, typer.Option(help="Re-embed everything (e.g. with another encoder).")] = False,
    factory: Annotated[
        str | None,
        typer.Option(help="FAISS index: Flat, IVF, IVFPQ, PQ, HNSW or a factory string (default: the index's own)."),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Decoding worker processes.")] = None,
    report: Annotated[Path | None, typer.Option(help="Also write the run's report as JSON here.")] = None,
    with_: Annotated[
        str | None,
        typer.Option(
            "--with",
            help="Also compute what later stages need, now: 'rerank' (the preset's matcher's vision features).",
        ),
    ] = None,
) -> None:
    """Index a folder or manifest into an on-disk FAISS index (incremental, resumable).

    Without --config and --factory, an existing index keeps the preset and FAISS factory it was built with.
    """
    if modality not in ("image", "text"):
        fail(f"--modality must be 'image' or 'text', got {modality!r}")
    try:
        from ...adapters.registry import load_encoder, portable_entry
        from ..api import preset_for_run
        from ..config import preset_summary
        from ..store.fsutil import atomic_write_json
        from ..store.indexer import Indexer

        preset = preset_for_run(config, index, factory=factory, num_workers=workers)
        encoder = load_encoder(preset.encoder)
        indexer = Indexer(
            encoder, preset.index, encoder_entry=portable_entry(preset.encoder), preset=preset_summary(preset)
        )
        result = indexer.run(source, index, modality=modality, rebuild=rebuild)  # type: ignore[arg-type]
    except user_errors() as exc:
        fail(str(exc))
        return
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
    if with_:
        _precompute(with_, preset, index)


def _precompute(what: str, preset: Any, index: Path) -> None:
    """Index-time work for later stages (``--with rerank``): fill the feature cache now, not at the first query."""
    stages = {s.strip() for s in what.split(",") if s.strip()}
    if unknown := stages - {"rerank"}:
        fail(f"--with: unknown {sorted(unknown)}; known: ['rerank']")
    try:
        from ..stages.runner import Pipeline
        from ..store.features import precompute_features

        pipeline = Pipeline.from_preset(preset, index=index)
        rerank = [s for s in pipeline.stages if s.name == "rerank"]
        if not rerank:
            fail(
                f"--with rerank: preset {preset.name!r} has no rerank stage: pass --config with one (e.g. scene-rerank)"
            )
        stage = rerank[0]
        source, embeds = stage.features, stage.embeds  # type: ignore[attr-defined]
        if source.cache is None and embeds.cache is None:
            fail("--with rerank: the preset's rerank stage caches nothing (`cache: false`, `embed_cache: false`)")
        matcher = source.matcher
        done = precompute_features(pipeline.store, source) if source.cache is not None else None
        done_embeds = precompute_features(pipeline.store, embeds) if embeds.cache is not None else None
    except user_errors() as exc:
        fail(str(exc))
        return
    for what, report in (("features", done), ("ITC embeddings", done_embeds)):
        if report is not None:
            console.print(
                f"rerank {what} ({matcher.name}): {report.computed} computed, {report.cached} already cached, "
                f"{len(report.failed)} unreadable; {report.bytes_per_item / 1024:.1f} KiB per item",
                soft_wrap=True,
            )
