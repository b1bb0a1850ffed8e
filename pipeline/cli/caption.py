"""``viewfinder caption``: describe images in words, from a folder, a manifest or an index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import console


def caption_cmd(
    source: Annotated[
        Path,
        typer.Argument(
            help="An index folder (captions are cached in it), an image folder, a JSONL manifest or one image."
        ),
    ],
    model: Annotated[
        str, typer.Option(help="Captioner model entry: a packaged name or a YAML file.")
    ] = "scene-captioner",
    limit: Annotated[int | None, typer.Option(min=1, help="Caption at most this many images.")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Longest caption, in tokens.")] = 40,
    num_beams: Annotated[int, typer.Option(min=1, help="Beam search width (1: greedy).")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per image.")] = False,
) -> None:
    """Caption images with a captioner (batched, with progress); on an index, captions are kept in its cache."""
    from ...adapters.registry import load_model
    from ..progress import progress_bar
    from ..stages.caption import CaptionDecoding, Captioner
    from ..store.cache import ModelCache
    from ..store.images import IMAGE_EXTENSIONS
    from ..store.index_store import IndexStore
    from ..store.sources import list_source

    captioner_model = load_model(model, "captioner")
    cache = None
    if IndexStore.exists(source):
        with IndexStore.open(source) as store:
            items = [(row.id, row.key, row.path) for row in store.iter_items()]
        cache = ModelCache(source)
    elif source.is_file() and source.suffix.lower() in IMAGE_EXTENSIONS:  # one image
        items = [(0, source.name, str(source.expanduser().resolve()))]
    else:
        listing = list_source(source, "image")
        items = [(i, it.key, it.path) for i, it in enumerate(listing.items)]
    items = items[:limit] if limit else items
    captioner = Captioner(captioner_model, cache, CaptionDecoding(max_new_tokens, num_beams))
    captions: dict[int, str] = {}
    failed: list[tuple[int, str]] = []
    with progress_bar(f"captioning ({captioner_model.name})", len(items), "img", None) as bar:
        for start in range(0, len(items), 64):
            chunk = items[start : start + 64]
            made, _, bad = captioner.captions([(i, path) for i, _, path in chunk])
            captions.update(made)
            failed += bad
            bar.advance(len(chunk))
    reasons = dict(failed)
    if as_json:
        for item_id, key, path in items:
            row = {"id": item_id, "key": key, "path": path, "caption": captions.get(item_id)}
            if item_id in reasons:
                row["error"] = reasons[item_id]
            typer.echo(json.dumps(row))
        return
    table = Table(title=f"captions by {captioner_model.name}")
    for column in ("key", "caption"):
        table.add_column(column)
    for item_id, key, _ in items:
        table.add_row(key, captions.get(item_id) or f"[red]unreadable: {reasons.get(item_id, '?')}[/]")
    console.print(table)
