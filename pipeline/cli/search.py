"""``viewfinder search``: run a preset's pipeline over an index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import ConfigOpt, console, fail, user_errors


def search_cmd(
    query: Annotated[str | None, typer.Argument(help="Text to search for.")] = None,
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder.")] = Path("index"),
    image: Annotated[Path | None, typer.Option(help="Search with this image instead of text.")] = None,
    k: Annotated[int, typer.Option("-k", help="Number of hits.")] = 10,
    config: ConfigOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (query, hits with every stage's score, trace).")
    ] = False,
    trace: Annotated[
        Path | None, typer.Option(help="Write the trace (what each stage did) as JSON to this file.")
    ] = None,
) -> None:
    """Search an index with a text (or --image PATH), through the preset's stages.

    Without --config, the preset the index was built with is used.
    """
    try:
        from ..stages.runner import Pipeline
        from ..store.fsutil import atomic_write_json

        pipeline = Pipeline.from_preset(config, index=index)
        result = pipeline.search(query, image=image, k=k)
        if trace is not None:
            atomic_write_json(trace, result.trace)
    except user_errors() as exc:
        fail(str(exc))
        return
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    image_index = pipeline.store.manifest.modality == "image"
    title = f"{result.query!r}" if result.query is not None else f"image {result.image}"
    table = Table(title=f"top {len(result.hits)} for {title}" + (" (query truncated)" if result.truncated else ""))
    stage_columns = list(dict.fromkeys(name for h in result.hits for name in h.scores))  # preselect, itm, itc, rerank
    show_stages = len(stage_columns) > 1
    for column in ("rank", "score", *(stage_columns if show_stages else []), "id", "path" if image_index else "text"):
        table.add_column(column)
    for hit in result.hits:
        stage_scores = [f"{hit.scores[s]:.4f}" if s in hit.scores else "" for s in stage_columns] if show_stages else []
        last = hit.path if image_index else (hit.text or "")
        table.add_row(str(hit.rank), f"{hit.score:.4f}", *stage_scores, hit.key, last)
    console.print(table)
    per_stage = ", ".join(f"{name} {1000 * s:.1f}" for name, s in result.timings.items())
    console.print(f"[dim]{1000 * sum(result.timings.values()):.1f} ms ({per_stage})[/]")
