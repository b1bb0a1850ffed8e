"""``viewfinder eval-normalise`` and ``eval-feedback``: the agent stages measured on the scene benchmark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .common import ConfigOpt, console


def eval_normalise_cmd(
    dataset: Annotated[Path, typer.Argument(help="A scene benchmark folder.")],
    style: Annotated[
        str, typer.Option(help="Wording style of the requests (see viewfinder.pipeline.scenes.wordings).")
    ] = "synonyms",
    llm: Annotated[
        list[str] | None,
        typer.Option(help="MODEL=PROMPT: a chat model entry and the prompt it normalises with (repeatable)."),
    ] = None,
    preset: Annotated[
        list[str] | None,
        typer.Option(
            "--preset",
            "-p",
            help="NAME[+normalise.FIELD=VALUE...]: a preset's whole normalise stage (its candidates, grounding "
            "and verifier) over --index (repeatable; e.g. agent+normalise.verify=none).",
        ),
    ] = None,
    index: Annotated[
        Path | None, typer.Option("--index", "-i", help="An index of the split's images (for --preset).")
    ] = None,
    split: Annotated[str, typer.Option(help="Split whose scenes are requested.")] = "test",
    queries: Annotated[int, typer.Option(min=1, help="Requests (one per sampled scene).")] = 200,
    config: ConfigOpt = None,
    out: Annotated[Path | None, typer.Option(help="Report JSON path.")] = None,
) -> None:
    """R@1/R@5 of free-form requests as typed, after the rule baseline, after each LLM and after each
    preset's normalise stage, beside the same scenes' own captions (goal: normalised R@1 >= 0.9 x the
    captions')."""
    from ...adapters.registry import load_encoder, load_model
    from ..eval.normalise import llm_normaliser, normalisation_report, preset_normaliser, rule_normaliser
    from ..reports import machine_info
    from ..stages.presets import load_preset, load_preset_spec
    from ..stages.runner import Pipeline
    from .common import fail

    normalisers = {"rule": rule_normaliser}
    for spec in llm or []:
        model, _, prompt = spec.partition("=")
        normalisers[spec] = llm_normaliser(load_model(model, "chat"), prompt or "normalise")
    encoder = load_encoder(load_preset(config or "default").encoder)
    if preset and index is None:
        fail("--preset runs the preset's stages over an index of the split: give it with --index")
    for spec in preset or []:
        pipeline = Pipeline.from_preset(load_preset_spec(spec), index=index, encoder=encoder)  # type: ignore[arg-type]
        normalisers[f"preset:{spec}"] = preset_normaliser(pipeline)
    report = normalisation_report(dataset, split, encoder, normalisers, style=style, n_queries=queries)
    report["machine"] = machine_info()
    table = Table(
        title=f"{report['n_queries']} requests in style {escape(style)!r} ({split}, {report['images']} images)"
    )
    for column in ("queries", "R@1", "R@5", "R@1 / captions'", "invalid", "typed kept", "seconds"):
        table.add_column(column)
    caps = report["captions"]
    table.add_row("the scenes' captions", f"{caps['R@1']:.3f}", f"{caps['R@5']:.3f}", "1.00", "", "", "")
    typed = report["as_typed"]

    def ratio(r1: float) -> str:
        return f"{r1 / caps['R@1']:.2f}" if caps["R@1"] else "-"

    table.add_row("as typed", f"{typed['R@1']:.3f}", f"{typed['R@5']:.3f}", ratio(typed["R@1"]), "", "", "")
    for name, row in report["normalised"].items():
        invalid = f"{row['invalid_rate']:.2f}" if "invalid_rate" in row else ""
        kept = f"{row['kept_typed_rate']:.2f}" if "kept_typed_rate" in row else ""
        table.add_row(
            escape(name), f"{row['R@1']:.3f}", f"{row['R@5']:.3f}", ratio(row["R@1"]), invalid, kept,
            f"{row['seconds']:.1f}",
        )  # fmt: skip
    console.print(table)
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report: {escape(str(out))}", soft_wrap=True)


FEEDBACK_BASELINES = ("none", "rule", "rocchio")
"""The variants every feedback report starts with."""


def run_feedback_experiment(
    dataset: Path,
    index: Path,
    variants: list[str],
    *,
    split: str,
    queries: int,
    rounds: int,
    captioner: str | None,
    preselect_k: int,
    exclude_rejected: bool,
    traces: Path | None = None,
) -> dict:
    """Build the variants, run them on the split's partial queries, print the table."""
    from ..eval.experiment import build_variants, partial_queries, run_experiment
    from ..reports import machine_info

    chosen, scenes = partial_queries(dataset, split, queries)
    pipelines = build_variants(
        variants, index, captioner=captioner, preselect_k=preselect_k, exclude_rejected=exclude_rejected
    )
    report = run_experiment(pipelines, chosen, scenes, rounds=rounds, traces_path=traces)
    report.update(split=split, captioner=captioner, preselect_k=preselect_k, exclude_rejected=exclude_rejected)
    report["machine"] = machine_info()
    print_experiment(report)
    return report


def print_experiment(report: dict) -> None:
    """One table: per variant and round, Hits@1/@k, found@k, median rank, invalid rate, tokens, seconds."""
    k = report["k"]
    table = Table(
        title=f"{report['n_queries']} partial queries, target = one scene, {report['rounds']} feedback rounds",
        caption=f"found@{k}: the target was in the top {k} by that round; rank: median among the candidates",
    )
    for column in ("variant", "round", "hits@1", f"hits@{k}", f"found@{k}", "rank", "invalid", "tokens", "s"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, entry in report["variants"].items():
        for r in entry["per_round"]:
            invalid = "" if r["invalid_rate"] is None else f"{r['invalid_rate']:.2f}"
            rank = "-" if r["median_rank"] is None else f"{r['median_rank']:.0f}"
            table.add_row(
                escape(name) if r["round"] == 0 else "", str(r["round"]), f"{r['hits@1']:.2f}",
                f"{r[f'hits@{k}']:.2f}", f"{r[f'found@{k}']:.2f}", rank, invalid, f"{r['tokens']:.0f}",
                f"{r['seconds']:.2f}", end_section=r["round"] == report["rounds"],
            )  # fmt: skip
    console.print(table)
    gains = ", ".join(
        f"{escape(n)} {e['gain_points']:+.0f} / {e['found_gain_points']:+.0f}" for n, e in report["variants"].items()
    )
    console.print(f"gain after the last round, points of hits@{k} / found@{k}: {gains}", soft_wrap=True)


VariantOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--variant",
        "-v",
        help="none | rule | rocchio | MODEL=PROMPT (the rewrite stage's chat model entry and prompt), "
        "each optionally +rocchio; preset:NAME for a whole preset (repeatable).",
    ),
]


ScenesArg = Annotated[Path, typer.Argument(help="A scene benchmark folder.")]
SplitIndexOpt = Annotated[Path, typer.Option("--index", "-i", help="An index of the split's images.")]
SplitOpt = Annotated[str, typer.Option(help="Split of the partial queries.")]
QueriesOpt = Annotated[int, typer.Option(min=1, help="Partial queries (seeded sample).")]
RoundsOpt = Annotated[int, typer.Option(min=1, help="Feedback rounds after round 0.")]
CaptionerOpt = Annotated[
    str | None, typer.Option(help="Captioner entry for the hits' captions ('': the items' own texts).")
]
PreselectKOpt = Annotated[int, typer.Option(min=1, help="Candidates each round (for the target's rank).")]
ExcludeRejectedOpt = Annotated[bool, typer.Option(help="Leave hits marked not relevant out of later rounds.")]


def eval_feedback_cmd(
    dataset: ScenesArg,
    index: SplitIndexOpt,
    variant: VariantOpt = None,
    split: SplitOpt = "test",
    queries: QueriesOpt = 100,
    rounds: RoundsOpt = 3,
    captioner: CaptionerOpt = "scene-captioner",
    preselect_k: PreselectKOpt = 256,
    exclude_rejected: ExcludeRejectedOpt = True,
    out: Annotated[Path | None, typer.Option(help="Report JSON path.")] = None,
) -> None:
    """Relevance feedback by the simulated user on partial queries: per round Hits@1/@10 for no rewrite,
    the caption rule, Rocchio and each variant (goal: round 3 >= round 0 + 30 points, above Rocchio)."""
    variants = list(dict.fromkeys([*FEEDBACK_BASELINES, *(variant or [])]))
    report = run_feedback_experiment(
        dataset, index, variants, split=split, queries=queries, rounds=rounds, captioner=captioner or None,
        preselect_k=preselect_k, exclude_rejected=exclude_rejected,
    )  # fmt: skip
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report: {escape(str(out))}", soft_wrap=True)


def eval_composed_cmd(
    dataset: Annotated[Path, typer.Argument(help="A scene benchmark folder.")],
    index: Annotated[Path, typer.Option("--index", "-i", help="An index of the split's images (edited ones too).")],
    config: ConfigOpt = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            "--variant",
            "-v",
            help="preset (the compose stage as the preset has it) | concat | MODEL=PROMPT, each optionally "
            "+ref:W (the reference image's weight in the query); repeatable. Default: preset.",
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Split of the composed queries.")] = "test",
    queries: Annotated[int | None, typer.Option(min=1, help="At most this many composed queries.")] = None,
    baselines: Annotated[
        Path | None, typer.Option(help="A `viewfinder eval` report of the split, for the dual-encoder baselines.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Report JSON path.")] = None,
) -> None:
    """Composed queries (reference image + edit) through a preset with a compose stage: R@1/5/10 beside
    the dual encoder's baselines (goal: R@10 >= 0.95)."""
    from ..eval.composed import composed_experiment
    from ..reports import machine_info

    report = composed_experiment(dataset, split, index, list(variant or ["preset"]), preset=config or "agent",
                                 n_queries=queries)  # fmt: skip
    for entry in report["variants"].values():
        entry.pop("traces", None)
    report["machine"] = machine_info()
    if baselines is not None:
        report["baselines"] = (
            json.loads(baselines.read_text()).get("query_sets", {}).get("composed", {}).get("baselines", {})
        )
    print_composed(report)
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report: {escape(str(out))}", soft_wrap=True)


def print_composed(report: dict) -> None:
    """One table: the dual-encoder baselines (when known), then each variant's R@1/5/10, median rank,
    refused answers and seconds per query."""
    table = Table(title=f"{report['n_queries']} composed queries ({report['split']}): reference image + edit")
    for column in ("method", "R@1", "R@5", "R@10", "median rank", "refused", "s/query"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, row in report.get("baselines", {}).items():
        table.add_row(name.replace("_", " "), *(f"{row[m]:.3f}" for m in ("R@1", "R@5", "R@10")),
                      f"{row['median_rank']:.0f}", "", "")  # fmt: skip
    for name, row in report["variants"].items():
        table.add_row(
            f"[bold]{escape(name)}[/] ({' -> '.join(row['stages'])})",
            *(f"{row[m]:.3f}" for m in ("R@1", "R@5", "R@10")), f"{row['median_rank']:.0f}",
            f"{row['fallback_rate']:.2f}", f"{row['seconds_per_query']:.2f}",
        )  # fmt: skip
    console.print(table)


def eval_dialogue_cmd(
    dataset: ScenesArg,
    index: SplitIndexOpt,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            "--variant",
            "-v",
            help="QUESTIONER+REFORMULATOR: random|grounded|MODEL=PROMPT + concat|rule|MODEL=PROMPT (repeatable).",
        ),
    ] = None,
    config: ConfigOpt = None,
    split: SplitOpt = "test",
    queries: QueriesOpt = 100,
    rounds: Annotated[int, typer.Option(min=1, max=20, help="Questions after round 0.")] = 10,
    out: Annotated[Path | None, typer.Option(help="Report JSON path.")] = None,
) -> None:
    """Dialogue search with the simulated user answering (ChatIR / PlugIR): Hits@10 per round and BRI
    for random questions with the dialogue concatenated, grounded questions concatenated, and
    grounded questions with the rule reformulation (goal: round 5 >= round 0 + 30 points)."""
    from ..eval.dialogue import DIALOGUE_BASELINES, dialogue_report
    from ..reports import machine_info
    from ..stages.runner import Pipeline

    pipeline = Pipeline.from_preset(config or "dialogue", index=index)
    report = dialogue_report(dataset, split, pipeline, list(variant or DIALOGUE_BASELINES),
                             n_queries=queries, rounds=rounds)  # fmt: skip
    report["pipeline"] = pipeline.name
    report["machine"] = machine_info()
    print_dialogue(report)
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report: {escape(str(out))}", soft_wrap=True)


def print_dialogue(report: dict) -> None:
    """One table: per variant, Hits@k at rounds 0, 1, 2, 3, 5 and the last, BRI, unanswered and
    refused questions."""
    k, rounds = report["k"], report["rounds"]
    shown = sorted({0, 1, 2, 3, 5, rounds} & set(range(rounds + 1)))
    table = Table(
        title=f"{report['n_queries']} dialogues from partial queries ({report['split']}), simulated user answering"
    )
    table.add_column("variant")
    for r in shown:
        table.add_column(f"hits@{k} r{r}", justify="right")
    for column in ("BRI", "unanswered", "refused"):
        table.add_column(column, justify="right")
    for name, entry in report["variants"].items():
        cells = [f"{entry['per_round'][r][f'hits@{k}']:.2f}" for r in shown]
        table.add_row(escape(name), *cells, f"{entry['bri']:.3f}", f"{entry['unanswered_rate']:.2f}",
                      f"{entry['refused_question_rate']:.2f}")  # fmt: skip
    console.print(table)


def eval_genid_cmd(
    manifest: Annotated[
        Path,
        typer.Argument(help="A JSONL manifest with captions (a scene benchmark's <split>.jsonl) or a scene folder."),
    ],
    index: Annotated[Path, typer.Option("--index", "-i", help="The index the identifier models memorised.")],
    model: Annotated[
        list[Path],
        typer.Option("--model", "-m", help="A trained identifier model folder (repeatable: one per scheme)."),
    ],
    split: Annotated[str, typer.Option(help="With a scene folder: the split whose captions are the queries.")] = "test",
    queries: Annotated[
        int | None, typer.Option(min=1, help="A seeded sample of this many captions (default: all).")
    ] = None,
    beams: Annotated[int, typer.Option(min=1, help="Beams of the constrained decoding.")] = 10,
    fusion: Annotated[
        list[str] | None,
        typer.Option(
            "--fusion",
            help="A fusion with CLIP to measure, rrf:WEIGHT or score:WEIGHT (repeatable; default: a small grid). "
            "The one best on a tuning half of the queries is reported on the other half.",
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Report JSON path.")] = None,
) -> None:
    """Generative identifiers (GRACE) beside CLIP on the same index and captions: T->I R@1/5/10 of CLIP,
    of each identifier model alone and fused with CLIP; invalid outputs; decoding time per query
    beside FAISS search time."""
    from ..eval.genid import DEFAULT_FUSIONS, genid_report, parse_fusion

    if manifest.is_dir():
        manifest = manifest / f"{split}.jsonl"
    fusions = [parse_fusion(f) for f in fusion] if fusion else list(DEFAULT_FUSIONS)
    report = genid_report(manifest, index, list(model), n_queries=queries, beams=beams, fusions=fusions)
    print_genid_table(report, f"{report['n_queries']} captions -> {report['items']} images ({escape(str(index))})")
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report: {escape(str(out))}", soft_wrap=True)


def print_genid_table(report: dict[str, Any], title: str) -> None:
    """CLIP, each identifier model alone and its fusions with CLIP, one table; then, per model, the fusion
    picked on the tuning half of the queries against CLIP on the held-out half."""
    table = Table(title=title)
    for column in ("method", "R@1", "R@5", "R@10", "invalid", "ms / query"):
        table.add_column(column, justify="left" if column == "method" else "right")
    clip = report["clip"]
    table.add_row("CLIP (FAISS search)", *(f"{clip[m]:.3f}" for m in ("R@1", "R@5", "R@10")), "",
                  f"{clip['encode_ms_per_query'] + clip['search_ms_per_query']:.1f}")  # fmt: skip
    for entry in report["models"].values():
        alone, scheme = entry["alone"], entry["scheme"]
        table.add_row(f"genid {scheme}", *(f"{alone[m]:.3f}" for m in ("R@1", "R@5", "R@10")),
                      str(entry["invalid_outputs"]), f"{entry['decode_ms_per_query']:.1f}")  # fmt: skip
        for name, fused in entry["fused_with_clip"].items():
            table.add_row(f"CLIP + genid {scheme} ({name})", *(f"{fused[m]:.3f}" for m in ("R@1", "R@5", "R@10")),
                          "", "")  # fmt: skip
    console.print(table)
    for entry in report["models"].values():
        if chosen := entry.get("selected_fusion"):
            held, clip_held = chosen["held_out"], chosen["clip_held_out"]
            console.print(
                f"genid {entry['scheme']}: fusion {chosen['setting']} (best on the tuning half), held-out half: "
                f"R@1 {held['R@1']:.3f} (CLIP {clip_held['R@1']:.3f}), R@5 {held['R@5']:.3f} "
                f"(CLIP {clip_held['R@5']:.3f})",
                soft_wrap=True,
            )
