"""Export a finished training run's model into a zoo folder: weights as fp16 safetensors, with the
run's config and summary beside them, whatever kind of model the run trained."""

from __future__ import annotations

import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from ...errors import Error

WEIGHT_FILES = (
    "open_clip_model.safetensors",
    "qformer.safetensors",
    "captioner.safetensors",
    "adapter_model.safetensors",
)
"""The weights file of each kind of run (CLIP, reranker, captioner, the rewriter's LoRA adapter); every
other file of the model folder is copied."""


class ExportError(Error, ValueError):
    """The folder is not a finished training run; the message says what is missing."""


def export_run(run: Path, to: Path) -> Path:
    """Write ``run``/model into ``to`` (weights in fp16) with ``train_config.json`` and
    ``train_summary.json``; returns the weights file."""
    src = run / "model" if (run / "model").is_dir() else run / "adapter"  # a rewriter run writes adapter/
    weights = [src / name for name in WEIGHT_FILES if (src / name).is_file()]
    needed = [run / "train_config.json", run / "summary.json"]
    missing = [str(p) for p in needed if not p.is_file()] + ([] if weights else [f"{src}/<weights>.safetensors"])
    if missing:
        raise ExportError(
            f"{run} is not a finished training run (missing {', '.join(missing)}): give a folder written by "
            "`viewfinder train clip|reranker|captioner|rewriter`"
        )
    to.mkdir(parents=True, exist_ok=True)
    state = load_file(str(weights[0]))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, str(to / weights[0].name))
    for extra in sorted(src.iterdir()):
        if extra.is_file() and extra != weights[0] and extra.name != "README.md":  # peft's boilerplate card
            shutil.copyfile(extra, to / extra.name)
    shutil.copyfile(run / "train_config.json", to / "train_config.json")
    shutil.copyfile(run / "summary.json", to / "train_summary.json")
    for written in to.iterdir():
        written.chmod(0o644)  # a package file: readable by all, whatever the source's mode was
    return to / weights[0].name
