"""``viewfinder train``: train, export and document the project's own models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer

from ...adapters.entries import packaged_names
from .common import ViewfinderTyper, console, fail, user_errors

train_app = ViewfinderTyper(help="Train the project's own models (the offline zoo).", no_args_is_help=True)


@train_app.command("clip")
def train_clip_cmd(
    config: Annotated[
        str,
        typer.Option(
            "--config",
            "-c",
            help=f"Training config: a YAML file or a packaged name ({', '.join(packaged_names('train'))}).",
        ),
    ],
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps (resume later).")] = None,
) -> None:
    """Contrastive training of a CLIP from scratch on the scene benchmark (resumable)."""
    try:
        from ...adapters.open_clip_encoder import resolve_arch
        from ..train.clip import load_train_config, train_clip

        cfg = load_train_config(config)
        resolve_arch(cfg.arch)  # an unknown architecture fails before any data is generated
        result = train_clip(cfg, max_steps=max_steps)
    except user_errors() as exc:
        fail(str(exc))
        return
    console.print(f"{result.steps} steps in {result.seconds / 60:.1f} min; last val: {result.final_eval}")
    console.print(f"model: {result.model_dir} (open_clip local-dir)")


@train_app.command("export")
def export_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder written by `viewfinder train clip`.")],
    to: Annotated[Path, typer.Option(help="Destination folder, e.g. configs/zoo/scene-clip.")],
) -> None:
    """Copy a trained model into a zoo folder as fp16 safetensors (plus its training config)."""
    from safetensors.torch import load_file, save_file

    from ...adapters.open_clip_encoder import sha256_file

    src = run / "model"
    needed = [src / "open_clip_model.safetensors", src / "open_clip_config.json"]
    needed += [run / "train_config.json", run / "summary.json"]
    if missing := [str(p) for p in needed if not p.is_file()]:
        fail(
            f"{run} is not a finished training run (missing {', '.join(missing)}): give a folder written by "
            "`viewfinder train clip`"
        )
    state = load_file(str(src / "open_clip_model.safetensors"))
    to.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(to / "open_clip_model.safetensors")
    )
    shutil.copy(src / "open_clip_config.json", to / "open_clip_config.json")
    shutil.copy(run / "train_config.json", to / "train_config.json")
    shutil.copy(run / "summary.json", to / "train_summary.json")
    weights = to / "open_clip_model.safetensors"
    console.print(f"exported {src} -> {to} ({weights.stat().st_size / 1e6:.1f} MB fp16)", soft_wrap=True)
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

    try:
        name = json.loads((run / "train_config.json").read_text())["name"]
        card = write_model_card(model_dir, run, report, name)
    except user_errors() as exc:
        fail(str(exc))
        return
    console.print(f"wrote {card}", soft_wrap=True)
