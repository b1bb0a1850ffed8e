"""``viewfinder prompts``: the prompt files the language-model stages use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .agent_eval import (
    CaptionerOpt,
    ExcludeRejectedOpt,
    PreselectKOpt,
    QueriesOpt,
    RoundsOpt,
    ScenesArg,
    SplitIndexOpt,
    SplitOpt,
    VariantOpt,
)
from .common import ViewfinderTyper, console, fail

prompts_app = ViewfinderTyper(
    help="Prompts as data: list them, show one, compare variants with the simulated user.", no_args_is_help=True
)


@prompts_app.command("list")
def list_cmd() -> None:
    """The packaged prompts: name, version, the variables they fill, what they are for."""
    from ..llm.prompts import load_prompt, packaged_prompts

    table = Table()
    for column in ("name", "version", "fills", "description"):
        table.add_column(column)
    for name in packaged_prompts():
        p = load_prompt(name)
        table.add_row(p.name, str(p.version), ", ".join(p.input_variables), escape(p.description))
    console.print(table)


@prompts_app.command("show")
def show_cmd(name: Annotated[str, typer.Argument(help="A packaged prompt's name, or a prompt file.")]) -> None:
    """A prompt's messages, as the model will see them (variables in braces)."""
    from ..llm.prompts import load_prompt

    prompt = load_prompt(name)
    console.print(f"[bold]{escape(prompt.name)}[/] v{prompt.version} ({escape(prompt.source)})", soft_wrap=True)
    for role, text in prompt.messages:
        console.print(f"[dim]--- {role}[/]")
        console.print(escape(text), soft_wrap=True)


@prompts_app.command("experiment")
def experiment_cmd(
    dataset: ScenesArg,
    index: SplitIndexOpt,
    variant: VariantOpt = None,
    split: SplitOpt = "val",
    queries: QueriesOpt = 30,
    rounds: RoundsOpt = 3,
    captioner: CaptionerOpt = "scene-captioner",
    preselect_k: PreselectKOpt = 256,
    exclude_rejected: ExcludeRejectedOpt = True,
    mode: Annotated[
        str,
        typer.Option(
            help="feedback (-v MODEL=PROMPT rewrites), dialogue (-v QUESTIONER+REFORMULATOR) or composed "
            "(-v MODEL=PROMPT applying the edit, optionally +ref:W; the split's composed queries)."
        ),
    ] = "feedback",
    config: Annotated[
        str | None, typer.Option("--config", "-c", help="Dialogue and composed modes: the preset searched.")
    ] = None,
    baselines: Annotated[
        bool, typer.Option(help="Run the baselines beside the variants (none, rule, rocchio; or the dialogue ones).")
    ] = True,
    out_dir: Annotated[Path, typer.Option(help="Folder for report.json, rounds.png and traces.jsonl.")] = Path(
        "runs/prompt-experiment"
    ),
) -> None:
    """Prompt (and model) variants x partial queries x rounds with the simulated user: feedback rounds
    (one table per round: Hits@1/@10, found@10, median rank, invalid answers, tokens, seconds) or,
    with --mode dialogue, question-and-answer rounds (Hits@10 per round, BRI, refused questions), or with
    --mode composed, the split's composed queries (R@1/5/10, refused answers); a plot and every session's
    trace. Example: -v smollm2-135m-instruct=rewrite-feedback -v smollm2-135m-instruct=mine.yaml;
    --mode dialogue -v smollm2-135m-instruct=dialogue-question+rule; --mode composed
    -v scene-rewriter=compose-edit-short+ref:0"""
    from ..eval.composed import COMPOSED_BASELINES
    from ..eval.dialogue import DIALOGUE_BASELINES
    from ..eval.experiment import plot_rounds
    from .agent_eval import FEEDBACK_BASELINES, run_feedback_experiment

    known = {"feedback": FEEDBACK_BASELINES, "dialogue": DIALOGUE_BASELINES, "composed": COMPOSED_BASELINES}
    if mode not in known:
        raise typer.BadParameter(f"{mode!r}: feedback, dialogue or composed", param_hint="--mode")
    if not variant and not baselines:
        fail("nothing to run: give --variant, or keep --baselines")
    defaults = known[mode] if baselines else ()
    variants = list(dict.fromkeys([*defaults, *(variant or [])]))
    out_dir.mkdir(parents=True, exist_ok=True)
    if mode == "dialogue":
        report = _dialogue_experiment(dataset, index, variants, split, queries, rounds, config, out_dir)
    elif mode == "composed":
        report = _composed_experiment(dataset, index, variants, split, queries, config, out_dir)
    else:
        report = run_feedback_experiment(
            dataset, index, variants, split=split, queries=queries, rounds=rounds, captioner=captioner or None,
            preselect_k=preselect_k, exclude_rejected=exclude_rejected, traces=out_dir / "traces.jsonl",
        )  # fmt: skip
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    names = ["report.json", "traces.jsonl"]
    if mode != "composed":  # one round: nothing to plot
        plot_rounds(report, out_dir / "rounds.png")
        names.insert(1, "rounds.png")
    for name in names:
        console.print(f"{name}: {escape(str(out_dir / name))}", soft_wrap=True)


def _dialogue_experiment(
    dataset: Path, index: Path, variants: list[str], split: str, queries: int, rounds: int, config: str | None,
    out_dir: Path,
) -> dict:  # fmt: skip
    from ..eval.dialogue import dialogue_report
    from ..reports import machine_info
    from ..stages.runner import Pipeline
    from .agent_eval import print_dialogue

    pipeline = Pipeline.from_preset(config or "dialogue", index=index)
    with (out_dir / "traces.jsonl").open("w", encoding="utf-8") as traces:
        report = dialogue_report(dataset, split, pipeline, variants, n_queries=queries, rounds=rounds,
                                 traces=traces)  # fmt: skip
    report.update(mode="dialogue", pipeline=pipeline.name, machine=machine_info())
    print_dialogue(report)
    return report


def _composed_experiment(
    dataset: Path, index: Path, variants: list[str], split: str, queries: int, config: str | None, out_dir: Path
) -> dict:
    from ..eval.composed import composed_experiment
    from ..reports import machine_info
    from .agent_eval import print_composed

    report = composed_experiment(dataset, split, index, variants, preset=config or "agent", n_queries=queries)
    with (out_dir / "traces.jsonl").open("w", encoding="utf-8") as traces:
        for name, entry in report["variants"].items():
            for example in entry.pop("traces", []):
                traces.write(json.dumps({"variant": name} | example, default=str) + "\n")
    report.update(mode="composed", machine=machine_info())
    print_composed(report)
    return report
