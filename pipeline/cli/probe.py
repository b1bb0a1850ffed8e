"""``viewfinder eval-probe``: the shape probe on any encoder entry's vision tokens."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .common import console


def eval_probe_cmd(
    dataset: Annotated[Path, typer.Argument(help="A scene benchmark folder.")],
    model: Annotated[
        list[str],
        typer.Option(
            "--model", "-m", help="Encoder entry: a packaged name, a YAML entry or a trained model folder (repeatable)."
        ),
    ],
    layers: Annotated[
        list[str] | None,
        typer.Option(
            "--layers",
            "-l",
            help="Layers to probe, comma-separated or repeated: stem, block1.. (ViT), layer1.. (ModifiedResNet), "
            "a timm stage, qformer (what the Q-Former reads), last. Default: every layer, and qformer.",
        ),
    ] = None,
    train: Annotated[int, typer.Option("--train", min=1, help="Training scenes: the split's first N.")] = 4000,
    eval_scenes: Annotated[int, typer.Option("--eval", min=1, help="Held-out scenes: the N after those.")] = 1000,
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps per probe (the same for each).")] = 1000,
    batch_size: Annotated[int, typer.Option(min=1, help="Scenes per step.")] = 128,
    seed: Annotated[int, typer.Option(help="Seeds each probe's initialisation and batches.")] = 0,
    split: Annotated[str, typer.Option(help="Split the scenes come from.")] = "train",
    pixel_cnn: Annotated[bool, typer.Option(help="Train the small CNN on the pixels as the reference.")] = True,
    device: Annotated[str, typer.Option(help="Where the probes train (cpu, cuda).")] = "cpu",
    out: Annotated[Path | None, typer.Option(help="Report JSON path.")] = None,
) -> None:
    """Which shapes a scene holds, read by a small probe from each encoder's vision tokens at each
    layer (the Q-Former's input among them), beside a small CNN on the pixels with the same budget:
    micro/macro F1 on held-out scenes (goal for the Q-Former's input: >= 0.95)."""
    from ..eval.probe import ProbeSettings, probe_report
    from ..reports import save_report

    names = [name.strip() for spec in layers or [] for name in spec.split(",") if name.strip()]
    settings = ProbeSettings(
        n_train=train, n_eval=eval_scenes, steps=steps, batch_size=batch_size, seed=seed, split=split,
        pixel_cnn=pixel_cnn, device=device,
    )  # fmt: skip
    report = probe_report(dataset, list(model), settings, layers=names or None)
    report["command"] = " ".join(["viewfinder", *sys.argv[1:]])
    print_probe(report)
    if out:
        save_report(report, out)
        console.print(f"report: {escape(str(out))}", soft_wrap=True)


def print_probe(report: dict) -> None:
    """One row per encoder and layer: its token grid, micro/macro F1, exact sets, seconds."""
    s = report["settings"]
    table = Table(
        title=f"shape probe: {s['n_train']} training, {s['n_eval']} held-out scenes, {s['steps']} steps each",
        caption="tokens: count x width (grid); * = what the Q-Former reads",
    )
    for column in ("encoder", "layer", "tokens", "micro F1", "macro F1", "exact set", "s"):
        table.add_column(column, justify="left" if column in ("encoder", "layer") else "right")
    for key, block in report["encoders"].items():
        reads = block["qformer_reads"]
        rows = list(block["layers"].items())
        for i, (name, r) in enumerate(rows):
            star = " *" if name == "qformer" or r["layer"] == reads else ""
            grid = "x".join(map(str, r["grid"]))
            extra = f"{r['extra_tokens']}+" if r["extra_tokens"] else ""
            table.add_row(
                escape(key) if i == 0 else "", escape(name) + star, f"{r['tokens']} x {r['width']} ({extra}{grid})",
                f"{r['micro_f1']:.3f}", f"{r['macro_f1']:.3f}", f"{r['exact_set_accuracy']:.3f}", f"{r['seconds']:.0f}",
                end_section="pixel_cnn" not in block and i == len(rows) - 1,
            )  # fmt: skip
        if "pixel_cnn" in block:
            r = block["pixel_cnn"]
            table.add_row(
                "", "pixel CNN (reference)", "x".join(map(str, r["input"])), f"{r['micro_f1']:.3f}",
                f"{r['macro_f1']:.3f}", f"{r['exact_set_accuracy']:.3f}", f"{r['seconds']:.0f}", end_section=True,
            )  # fmt: skip
    console.print(table)
