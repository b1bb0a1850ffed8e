"""``viewfinder demo`` command: prints the demo's queries, hits and evaluation summary."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .common import ConfigOpt, console


def demo_cmd(
    cache: Annotated[Path | None, typer.Option(help="Cache folder (default: ~/.cache/viewfinder/demo).")] = None,
    config: ConfigOpt = None,
    scenes: Annotated[int, typer.Option(min=1, help="Scenes in the demo collection.")] = 2000,
) -> None:
    """Offline tour: generate scenes, index them with the bundled model, search, evaluate."""
    from ..demo.run import run_demo
    from ..stages.presets import load_preset

    load_preset(config or "default")  # a wrong preset fails before any scene is generated
    result = run_demo(cache, config or "default", scenes)
    for query, found in result.searches:
        table = Table(title=escape(query.label), title_justify="left", show_edge=False)
        for col in ("rank", "score", "id", "caption"):
            table.add_column(col)
        for hit in found.hits[:5]:
            mark = " [green](target)[/]" if hit.key == query.target_key else ""
            mark = mark or (" [green](matches)[/]" if hit.key in query.relevant else "")
            table.add_row(str(hit.rank), f"{hit.score:.3f}", escape(hit.key) + mark, escape(hit.text or ""))
        console.print(table)
    if result.reranked:
        console.print(f"\n[bold]reranked[/] by {escape(str(result.rerank_preset))} (rank before reranking in brackets)")
    for query, before, after in result.reranked[:4]:
        previous = {h.key: h.rank for h in before.hits}
        table = Table(title=escape(query.label), title_justify="left", show_edge=False)
        for col in ("rank", "was", "itm", "itc", "id"):
            table.add_column(col)
        for hit in after.hits[:5]:
            mark = " [green](target)[/]" if hit.key == query.target_key else ""
            mark = mark or (" [green](matches)[/]" if hit.key in query.relevant else "")
            was = previous.get(hit.key)
            moved = "" if was == hit.rank else "[yellow]"
            itm, itc = hit.scores.get("itm"), hit.scores.get("itc")
            table.add_row(
                str(hit.rank),
                f"{moved}{'-' if was is None else was}",
                "" if itm is None else f"{itm:.3f}",
                "" if itc is None else f"{itc:.3f}",
                escape(hit.key) + mark,
            )
        console.print(table)
    _print_agent(result)
    r = result.report
    t2i, i2t = r["text_to_image"], r["image_to_text"]
    console.print(
        f"\n[bold]eval[/] of the dual encoder alone (`viewfinder eval` with a reranking preset adds the reranked "
        f"figures) on {r['images']} demo scenes, {r['captions']} held-out-template captions: "
        f"text→image R@1 {t2i['R@1']:.3f} R@5 {t2i['R@5']:.3f} R@10 {t2i['R@10']:.3f}; "
        f"image→text R@1 {i2t['R@1']:.3f} R@5 {i2t['R@5']:.3f}"
    )
    sets = r.get("query_sets", {})
    if partial := sets.get("partial"):
        shares = ", ".join(
            f"{name} {row['share_at_k']:.2f} (chance {row['chance']:.2f})"
            for name, row in partial["attributes"].items()
            if name != "all"
        )
        console.print(f"partial queries, share of top-10 matching: {shares}")
    for kind in ("binding_swap", "relation_swap"):
        if kind in sets:
            console.print(f"{kind.replace('_', ' ')} accuracy {sets[kind]['accuracy']:.3f} (chance 0.5)")
    timing = ", ".join(f"{k} {v:.1f}s" for k, v in result.seconds.items())
    console.print(f"\n[dim]{timing}[/]")
    console.print(f"contact sheet: [bold]{escape(str(result.contact_sheet))}[/]", soft_wrap=True)
    console.print(f"eval report:   {escape(str(result.report_path))}", soft_wrap=True)
    command = f"viewfinder search {shlex.quote('a large red star')} --index {shlex.quote(str(result.index_dir))}"
    console.print(f"search it:     {escape(command)}", soft_wrap=True)  # one line, whatever the width
    agent = f" --config {shlex.quote(result.agent.preset)}" if result.agent is not None else ""  # it ran: steer it
    serve = f"viewfinder serve --index {shlex.quote(str(result.index_dir))}{agent}"
    console.print(f"serve it:      {escape(serve)}   (then open http://127.0.0.1:8000/)", soft_wrap=True)


def _print_agent(result: Any) -> None:
    agent = result.agent
    if agent is None:
        if result.agent_problem:
            console.print(f"\n[yellow]agent part skipped[/]: {escape(result.agent_problem)}", soft_wrap=True)
        return

    def rank(r: int | None) -> str:
        return "not among the candidates" if r is None else f"rank {r}"

    console.print(f"\n[bold]agent[/] (preset {escape(agent.preset)}): a request in a wording never trained on")
    console.print(f"  typed:      {escape(agent.request)}  [dim](target {rank(agent.typed_rank)} as typed)[/]")
    note = " [yellow](the answer was refused: the query stayed)[/]" if agent.normalised.fallback else ""
    console.print(
        f"  normalised: {escape(str(agent.normalised.query))}  [dim](target {rank(agent.normalised.target_rank)})[/]"
        + note
    )
    console.print(
        f"[bold]feedback rounds[/]: the simulated user wants one scene for {escape(agent.partial_query)!r} "
        "and marks the hits each round"
    )
    for i, r in enumerate(agent.rounds):
        marks = f"; marked {r.relevant} relevant, {r.irrelevant} not" if i < len(agent.rounds) - 1 else ""
        note = " [yellow](refused answer: query kept)[/]" if r.fallback else ""
        console.print(f"  round {i}: {escape(str(r.query))!r}  [dim]target {rank(r.target_rank)}{marks}[/]{note}")
    if len(agent.sample_ranks) > 1:
        found = agent.found_per_round()
        console.print(
            f"  one case of {len(agent.sample_ranks)} partial queries drawn with seed {agent.seed} from the "
            f"{agent.pool} of the test split that name a place; target in the top {agent.k}: "
            + ", ".join(f"round {i} {n}/{len(agent.sample_ranks)}" for i, n in enumerate(found))
            + "  [dim](viewfinder eval-feedback measures it on 100)[/]",
            soft_wrap=True,
        )
