"""``viewfinder search``: run a preset's pipeline over an index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .common import ConfigOpt, console, err, note, read_line

if TYPE_CHECKING:
    from ..store.search import SearchResult


def search_cmd(
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder.")],
    query: Annotated[str | None, typer.Argument(help="Text to search for.")] = None,
    image: Annotated[Path | None, typer.Option(help="Search with this image instead of text.")] = None,
    edit: Annotated[
        str | None,
        typer.Option(help="With --image: a composed query, the change to make to that image (a preset with compose)."),
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="Number of hits.")] = 10,
    config: ConfigOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (query, hits with every stage's score, trace).")
    ] = False,
    trace: Annotated[
        Path | None, typer.Option(help="Write the trace (what each stage did) as JSON to this file.")
    ] = None,
    interactive: Annotated[
        bool,
        typer.Option(
            "--interactive", help="Feedback rounds: mark hits by rank (+1 +3 -2), see the rewritten query and new hits."
        ),
    ] = False,
    rounds: Annotated[int, typer.Option(min=1, help="With --interactive: at most this many feedback rounds.")] = 3,
) -> None:
    """Search an index with a text (or --image PATH), through the preset's stages.

    Without --config, the preset the index was built with is used. With --interactive, each round
    shows the hits with their captions; marking some relevant (+N) or not (-N) runs the next round,
    whose query a `rewrite` stage in the preset writes from those marks.
    """
    if interactive:
        _interactive(query, index, image, k, config, rounds, trace, edit)
        return
    from ..stages.runner import Pipeline
    from ..store.fsutil import atomic_write_json

    pipeline = Pipeline.from_preset(config, index=index)
    result = pipeline.search(query, image=image, edit=edit, k=k)
    if trace is not None:
        atomic_write_json(trace, result.trace)
        note(f"trace: {trace}")
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    image_index = pipeline.store.manifest.modality == "image"
    title = f"{result.query!r}" if result.query is not None else f"image {result.image}"
    if edit is not None:
        title = f"{result.query!r} (image {result.image}, edited: {edit!r})"
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


class BadMarks(ValueError):
    """Marks typed at the prompt that cannot be read: the prompt says why and asks again."""


def parse_marks(text: str, n_hits: int) -> tuple[list[int], list[int]]:
    """``"+1 +3 -2"`` -> ([1, 3], [2]) (ranks, 1-based); a bare number counts as relevant. A
    :class:`BadMarks` for a token that is not a hit's rank, or a hit marked both ways."""
    relevant, irrelevant = [], []
    for token in text.replace(",", " ").split():
        sign, number = (token[0], token[1:]) if token[0] in "+-" else ("+", token)
        if not number.isdigit() or not 1 <= int(number) <= n_hits:
            raise BadMarks(f"{token!r}: give hit ranks 1-{n_hits}, as +N (relevant) or -N (not relevant)")
        (relevant if sign == "+" else irrelevant).append(int(number))
    if both := sorted(set(relevant) & set(irrelevant)):
        raise BadMarks(f"hit {', '.join(map(str, both))}: marked both relevant (+) and not relevant (-)")
    return relevant, irrelevant


def _show_round(result: SearchResult, round_: int) -> None:
    table = Table(title=f"round {round_}: {result.query!r}")
    for column in ("rank", "score", "id", "caption"):
        table.add_column(column)
    for hit in result.hits:
        table.add_row(str(hit.rank), f"{hit.score:.4f}", hit.key, hit.caption or hit.text or "")
    console.print(table)


def _interactive(
    query: str | None,
    index: Path,
    image: Path | None,
    k: int,
    config: str | None,
    rounds: int,
    trace: Path | None,
    edit: str | None = None,
) -> None:
    from ..agent.session import Session
    from ..stages.registry import has_stage
    from ..stages.runner import Pipeline
    from ..store.fsutil import atomic_write_json

    pipeline = Pipeline.from_preset(config, index=index)
    if not has_stage((getattr(stage, "name", "") for stage in pipeline.stages), reads_feedback=True):
        console.print("[yellow]this preset has no stage that reads feedback: marks will not change the query[/]")
    session = Session(pipeline, k=k, max_rounds=rounds + 1)
    result = session.search(query, image=image, edit=edit)
    _show_round(result, 0)
    while session.round < rounds:
        answer = read_line("mark hits (+N relevant, -N not; empty: stop)")
        if answer is None or not answer.strip():  # an empty line, or the end of the input
            break
        try:
            good, bad = parse_marks(answer, len(result.hits))
        except BadMarks as exc:
            err.print(f"[red]{escape(str(exc))}[/]", soft_wrap=True)
            continue
        ids = {h.rank: h.id for h in result.hits}
        result = session.feedback(relevant=[ids[r] for r in good], irrelevant=[ids[r] for r in bad])
        _show_round(result, session.round)
    if trace is not None:
        atomic_write_json(trace, session.trace)
        note(f"trace: {trace}")
