"""``viewfinder train``: train, export and document the project's own models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ...adapters.entries import packaged_names
from .common import ViewfinderTyper, console

TrainConfigOpt = Annotated[
    str,
    typer.Option(
        "--config",
        "-c",
        help=f"Training config: a YAML file or a packaged name ({', '.join(packaged_names('train'))}).",
    ),
]
MaxStepsOpt = Annotated[int | None, typer.Option(help="Stop after this many steps (resume later).")]

train_app = ViewfinderTyper(help="Train the project's own models (the offline zoo).", no_args_is_help=True)


@train_app.command("clip")
def train_clip_cmd(
    config: TrainConfigOpt,
    max_steps: MaxStepsOpt = None,
) -> None:
    """Contrastive training of a CLIP from scratch on the scene benchmark (resumable)."""
    from ...adapters.open_clip_encoder import resolve_arch
    from ..train.clip import load_train_config, train_clip

    cfg = load_train_config(config)
    resolve_arch(cfg.arch)  # an unknown architecture fails before any data is generated
    result = train_clip(cfg, max_steps=max_steps)
    console.print(f"{result.steps} steps in {result.seconds / 60:.1f} min; last val: {result.final_eval}")
    console.print(f"model: {result.model_dir} (open_clip local-dir)")


@train_app.command("reranker")
def train_reranker_cmd(
    config: TrainConfigOpt,
    max_steps: MaxStepsOpt = None,
    max_minutes: Annotated[
        float | None, typer.Option(help="Stop after this many minutes of training and export what there is.")
    ] = None,
) -> None:
    """Train the Q-Former reranker (ITC + ITM) on top of a frozen CLIP (resumable)."""
    from ..train.reranker import load_reranker_config, train_reranker

    cfg = load_reranker_config(config)
    seconds = None if max_minutes is None else 60 * max_minutes
    result = train_reranker(cfg, max_steps=max_steps, max_seconds=seconds)
    console.print(f"{result.steps} steps in {result.seconds / 60:.1f} min; last val: {result.final_eval}")
    console.print(f"model: {result.model_dir} (qformer_clip folder)", soft_wrap=True)


@train_app.command("captioner")
def train_captioner_cmd(
    config: TrainConfigOpt,
    max_steps: MaxStepsOpt = None,
) -> None:
    """Train the Q-Former + small LM captioner on top of a frozen CLIP (resumable)."""
    from ..train.captioner import load_captioner_config, train_captioner

    result = train_captioner(load_captioner_config(config), max_steps=max_steps)
    console.print(f"{result.steps} steps in {result.seconds / 60:.1f} min; last val: {result.final_eval}")
    console.print(f"model: {result.model_dir} (qformer_clip_captioner folder)", soft_wrap=True)


@train_app.command("rewriter")
def train_rewriter_cmd(
    config: TrainConfigOpt,
    max_steps: MaxStepsOpt = None,
) -> None:
    """LoRA-tune the query rewriter (the default LLM) on requests written from training scenes (resumable)."""
    from ..train.rewriter import load_rewriter_config, train_rewriter

    result = train_rewriter(load_rewriter_config(config), max_steps=max_steps)
    console.print(f"{result.steps} steps in {result.seconds / 60:.1f} min")
    console.print(f"adapter: {result.adapter_dir} (name it as 'adapter' in a transformers_chat entry)", soft_wrap=True)


@train_app.command("genid")
def train_genid_cmd(
    index: Annotated[Path, typer.Option("--index", "-i", help="The index whose items the model memorises.")],
    config: TrainConfigOpt,
    continue_run: Annotated[
        bool,
        typer.Option("--continue", help="The collection grew: go on from the trained model on the new items."),
    ] = False,
    max_steps: MaxStepsOpt = None,
) -> None:
    """Teach a language model (LoRA) the identifiers of an index's items (GRACE): memorise each image
    (by its generated caption) and retrieve it from pseudo-queries; resumable."""
    from ..train.genid import load_genid_config, train_genid

    result = train_genid(load_genid_config(config), index, continue_run=continue_run, max_steps=max_steps)
    console.print(
        f"{result.steps} steps in {result.seconds / 60:.1f} min; id map: {result.added} items named, "
        f"{result.retired} retired",
        soft_wrap=True,
    )
    console.print(f"model: {result.adapter_dir} (name it as 'model' of a genid stage)", soft_wrap=True)


@train_app.command("export")
def export_cmd(
    run: Annotated[
        Path, typer.Argument(help="Run folder written by `viewfinder train clip|reranker|captioner|rewriter`.")
    ],
    to: Annotated[Path, typer.Option(help="Destination folder, e.g. configs/zoo/scene-clip.")],
) -> None:
    """Copy a trained model into a zoo folder as fp16 safetensors (plus its training config and summary)."""
    from ...adapters.open_clip_encoder import sha256_file
    from ..train.export import export_run

    weights = export_run(run, to)
    console.print(f"exported {run} -> {to} ({weights.stat().st_size / 1e6:.1f} MB fp16)", soft_wrap=True)
    console.print(
        f"sha256: {sha256_file(weights)} (pin it as 'sha256' in the model entry that loads it)", soft_wrap=True
    )


@train_app.command("card")
def card_cmd(
    model_dir: Annotated[Path, typer.Argument(help="Zoo folder to write MODEL_CARD.md into.")],
    run: Annotated[Path, typer.Option(help="Run folder (train_config.json, summary.json).")],
    report: Annotated[list[Path], typer.Option(help="`viewfinder eval` JSON reports (repeatable).")],
) -> None:
    """Write a model card from the run's files and `viewfinder eval` reports."""
    from ..eval.model_card import write_model_card

    name = json.loads((run / "train_config.json").read_text())["name"]
    card = write_model_card(model_dir, run, report, name)
    console.print(f"wrote {card}", soft_wrap=True)
