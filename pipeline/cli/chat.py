"""``viewfinder chat``: dialogue search in the terminal; the system asks, you answer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .common import ConfigOpt, console, note, read_line

if TYPE_CHECKING:
    from ..store.search import SearchResult


def chat_cmd(
    query: Annotated[str, typer.Argument(help="Your first, short description of the picture.")],
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder.")],
    config: ConfigOpt = None,
    k: Annotated[int, typer.Option("-k", min=1, help="Hits shown each round.")] = 5,
    rounds: Annotated[int, typer.Option(min=1, max=20, help="At most this many questions.")] = 10,
    questioner: Annotated[
        str, typer.Option(help="grounded (asks what separates the hits), random, or MODEL=PROMPT.")
    ] = "grounded",
    reformulator: Annotated[str, typer.Option(help="rule, concat, or MODEL=PROMPT.")] = "rule",
    trace: Annotated[Path | None, typer.Option(help="Write the dialogue's trace as JSON to this file.")] = None,
) -> None:
    """Dialogue search (ChatIR / PlugIR): after each round the system asks one question about the
    picture you want; your answer refines the query. An empty answer stops."""
    from ..agent.dialogue import DialogueSession
    from ..eval.dialogue import resolve_part
    from ..stages.runner import Pipeline
    from ..store.fsutil import atomic_write_json

    pipeline = Pipeline.from_preset(config or "dialogue", index=index)
    loaded: dict = {}
    asker, writer = resolve_part(questioner, loaded), resolve_part(reformulator, loaded)
    # Every questioner reads the captions of the hits and every reformulator your answers: no
    # collection's vocabulary is needed.
    session = DialogueSession(pipeline, asker, writer, k=k, max_rounds=rounds + 1)
    _show(session.search(query), 0)
    while session.round < rounds:
        question = session.ask()
        answer = read_line(f"Q: {question}")
        if answer is None or not answer.strip():  # an empty answer, or the end of the input
            break
        result = session.answer(answer)
        if session.unchanged is not None:
            console.print(
                f"(that answer changed nothing: {escape(session.unchanged)})", soft_wrap=True, highlight=False
            )
        _show(result, session.round)
    if trace is not None:
        atomic_write_json(trace, session.trace)
        note(f"trace: {trace}")


def _show(result: SearchResult, round_: int) -> None:
    table = Table(title=f"round {round_}: {escape(str(result.query))!r}", title_justify="left")
    for column in ("rank", "id", "caption"):
        table.add_column(column)
    for hit in result.hits:
        table.add_row(str(hit.rank), escape(hit.key), escape(hit.caption or hit.text or ""))
    console.print(table)
