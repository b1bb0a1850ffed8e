"""``viewfinder eval-normalise`` and ``eval-feedback``: the agent stages measured on the scene benchmark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .common import ConfigOpt, console, fail, user_errors


def eval_normalise_cmd(
    dataset: Annotated[Path, typer.Argument(help="A scene benchmark folder.")],
    style: Annotated[
        str, typer.Option(help="Wording style of the requests (see viewfinder.pipeline.scenes.wordings).")
    ] = "synonyms",
    llm: Annotated[
        list[str] | None,
        typer.Option(help="MODEL=PROMPT: a chat model entry and the prompt it normalises with (repeatable)."),
    ] = None,
    split: Annotated[str, typer.Option(help="Split whose scenes are requested.")] = "test",
    queries: Annotated[int, typer.Option(min=1, help="Requests (one per sampled scene).")] = 200,
    config: ConfigOpt = None,
    out: Annotated[Path | None, typer.Option(help="Report JSON path.")] = None,
) -> None:
    """R@1/R@5 of free-form requests as typed, after the rule baseline and after each LLM, beside the
    same scenes' own captions (goal: normalised R@1 >= 0.9 x the captions')."""
    try:
        from ...adapters.registry import load_encoder, load_model
        from ..config import load_preset
        from ..eval.normalise import llm_normaliser, normalisation_report, rule_normaliser
        from ..eval.retrieval import machine_info

        normalisers = {"rule": rule_normaliser}
        for spec in llm or []:
            model, _, prompt = spec.partition("=")
            normalisers[spec] = llm_normaliser(load_model(model, "chat"), prompt or "normalise")
        encoder = load_encoder(load_preset(config or "default").encoder)
        report = normalisation_report(dataset, split, encoder, normalisers, style=style, n_queries=queries)
    except (*user_errors(), ValueError) as exc:
        fail(str(exc))
        return
    report["machine"] = machine_info()
    table = Table(
        title=f"{report['n_queries']} requests in style {escape(style)!r} ({split}, {report['images']} images)"
    )
    for column in ("queries", "R@1", "R@5", "R@1 / captions'", "invalid", "seconds"):
        table.add_column(column)
    caps = report["captions"]
    table.add_row("the scenes' captions", f"{caps['R@1']:.3f}", f"{caps['R@5']:.3f}", "1.00", "", "")
    typed = report["as_typed"]

    def ratio(r1: float) -> str:
        return f"{r1 / caps['R@1']:.2f}" if caps["R@1"] else "-"

    table.add_row("as typed", f"{typed['R@1']:.3f}", f"{typed['R@5']:.3f}", ratio(typed["R@1"]), "", "")
    for name, row in report["normalised"].items():
        invalid = f"{row['invalid_rate']:.2f}" if "invalid_rate" in row else ""
        table.add_row(
            escape(name), f"{row['R@1']:.3f}", f"{row['R@5']:.3f}", ratio(row["R@1"]), invalid,
            f"{row['seconds']:.1f}",
        )  # fmt: skip
    console.print(table)
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report: {escape(str(out))}", soft_wrap=True)


def eval_feedback_cmd(
    dataset: Annotated[Path, typer.Argument(help="A scene benchmark folder.")],
    index: Annotated[Path, typer.Option("--index", "-i", help="An index of the split's images.")],
    llm: Annotated[
        list[str] | None,
        typer.Option(help="MODEL=PROMPT: a chat model entry and its rewrite prompt (repeatable)."),
    ] = None,
    split: Annotated[str, typer.Option(help="Split of the partial queries.")] = "test",
    queries: Annotated[int, typer.Option(min=1, help="Partial queries (seeded sample).")] = 100,
    rounds: Annotated[int, typer.Option(min=1, help="Feedback rounds after round 0.")] = 3,
    captioner: Annotated[str, typer.Option(help="Captioner entry for the hits' captions.")] = "scene-captioner",
    out: Annotated[Path | None, typer.Option(help="Report JSON path.")] = None,
) -> None:
    """Relevance feedback by the simulated user on partial queries: Hits@1/@10 per round for no rewrite,
    the caption rule, Rocchio and each LLM (goal: round 3 >= round 0 + 30 points, above Rocchio)."""
    try:
        from ...adapters.registry import load_model
        from ..eval.feedback import feedback_report, first_relevant_caption, llm_rewrite, no_rewrite, rocchio
        from ..eval.retrieval import machine_info
        from ..stages.presets import preset_for_index
        from ..store.index_store import IndexStore

        with IndexStore.open(index) as store:
            encoder = load_model(preset_for_index(None, store).encoder, "encoder")
        strategies = {
            "none": no_rewrite,
            "rule (first relevant caption)": first_relevant_caption,
            "rocchio": rocchio(encoder),
        }
        for spec in llm or []:
            model, _, prompt = spec.partition("=")
            strategies[spec] = llm_rewrite(load_model(model, "chat"), prompt or "rewrite-feedback")
        report = feedback_report(
            dataset,
            split,
            index,
            encoder,
            load_model(captioner, "captioner"),
            strategies,
            n_queries=queries,
            rounds=rounds,
        )
    except (*user_errors(), ValueError) as exc:
        fail(str(exc))
        return
    report["machine"] = machine_info()
    k = report["k"]
    table = Table(title=f"{report['n_queries']} partial queries, target = one scene, {rounds} feedback rounds")
    table.add_column("strategy")
    for i in range(rounds + 1):
        table.add_column(f"round {i} hits@1 / @{k}")
    table.add_column("gain (points)")
    for name, row in report["strategies"].items():
        cells = [f"{r['hits@1']:.2f} / {r[f'hits@{k}']:.2f}" for r in row["per_round"]]
        table.add_row(escape(name), *cells, f"{row['gain_points']:+.0f}")
    console.print(table)
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report: {escape(str(out))}", soft_wrap=True)
