"""``viewfinder train``: train, export and document the project's own models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

train_app = typer.Typer(help="Train the project's own models (the offline zoo).", no_args_is_help=True)
console = Console()


@train_app.command("clip")
def train_clip_cmd(
    config: Annotated[str, typer.Option("--config", "-c", help="Training config YAML (or a name in configs/train).")],
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps (resume later).")] = None,
) -> None:
    """Contrastive training of a CLIP from scratch on the scene benchmark (resumable)."""
    from ..config import ConfigError
    from ..train.clip import load_train_config, train_clip

    try:
        cfg = load_train_config(config)
    except ConfigError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    result = train_clip(cfg, max_steps=max_steps)
    console.print(f"{result.steps} steps in {result.seconds / 60:.1f} min; last val: {result.final_eval}")
    console.print(f"model: {result.model_dir} (open_clip local-dir)")


@train_app.command("export")
def export_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder written by `viewfinder train clip`.")],
    to: Annotated[Path, typer.Option(help="Destination folder, e.g. configs/zoo/scene-clip.")],
) -> None:
    """Copy a trained model into a zoo folder as fp16 safetensors (plus its training config)."""
    from safetensors.torch import load_file, save_file

    src = run / "model"
    state = load_file(str(src / "open_clip_model.safetensors"))
    to.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(to / "open_clip_model.safetensors")
    )
    shutil.copy(src / "open_clip_config.json", to / "open_clip_config.json")
    shutil.copy(run / "train_config.json", to / "train_config.json")
    shutil.copy(run / "summary.json", to / "train_summary.json")
    size = (to / "open_clip_model.safetensors").stat().st_size / 1e6
    console.print(f"exported {src} -> {to} ({size:.1f} MB fp16)")


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
    console.print(f"wrote {card}")
