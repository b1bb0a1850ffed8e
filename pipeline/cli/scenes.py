"""Command line for the scene benchmark (mounted as ``viewfinder scenes ...``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..progress import progress_bar
from ..scenes.dataset import load_scene_dataset, write_scene_dataset
from ..scenes.generator import SceneGeneratorConfig
from .common import ViewfinderTyper

app = ViewfinderTyper(
    help="The synthetic scene benchmark: shapes with colour, size and position, their scene "
    "graphs, captions and query sets.",
    no_args_is_help=True,
)


@app.callback()
def main() -> None:
    """Generate and inspect scene benchmarks."""


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", help="Folder to write (must not exist).")],
    seed: Annotated[int, typer.Option(help="Root seed: the same seed gives the same dataset.")] = 0,
    n_train: Annotated[int, typer.Option(help="Training scenes.")] = 20000,
    n_val: Annotated[int, typer.Option(help="Validation scenes.")] = 1000,
    n_test: Annotated[int, typer.Option(help="Test scenes (plus edited scenes for composed queries).")] = 1000,
    n_compositional: Annotated[int, typer.Option(help="Scenes each holding a held-out (shape, colour) pair.")] = 1000,
    n_composed: Annotated[
        int | None, typer.Option(help="Composed queries per query split (default: a quarter of its scenes).")
    ] = None,
    image_size: Annotated[int, typer.Option(help="Image side in pixels.")] = 64,
    max_objects: Annotated[int, typer.Option(help="Most objects per scene (1-4).")] = 3,
    held_out_pairs: Annotated[int, typer.Option(help="(shape, colour) pairs held out of training.")] = 8,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing folder.")] = False,
) -> None:
    """Generate a scene benchmark: images, manifests, Karpathy JSON and query sets."""
    if out.exists() and not overwrite:
        raise typer.BadParameter(f"{out} already exists: choose another folder or add --overwrite", param_hint="--out")
    config = SceneGeneratorConfig(
        seed=seed,
        image_size=image_size,
        max_objects=max_objects,
        held_out_pairs=held_out_pairs,
    )
    with progress_bar("writing scenes", None, "img", enabled=True) as bar:

        def report(done: int, total: int) -> None:
            if done % 200 == 0 or done == total:
                bar.update(done, total)

        info = write_scene_dataset(
            out,
            config,
            n_train=n_train,
            n_val=n_val,
            n_test=n_test,
            n_compositional=n_compositional,
            n_composed_queries=n_composed,
            overwrite=overwrite,
            progress=report,
        )
    for split, entry in info["splits"].items():
        line = f"{split:>13}: {entry['images']} images"
        if "query_counts" in entry:
            line += "; queries " + json.dumps(entry["query_counts"])
        typer.echo(line)
    typer.echo(f"wrote {out}")


@app.command()
def info(root: Annotated[Path, typer.Argument(help="A folder written by `generate`.")]) -> None:
    """Show what a scene benchmark folder holds."""
    dataset = load_scene_dataset(root)
    typer.echo(f"seed {dataset.info['seed']}, held-out pairs: {dataset.info['held_out_pairs']}")
    for split, scenes in dataset.scenes.items():
        n_queries = len(dataset.queries.get(split, []))
        typer.echo(f"{split:>13}: {len(scenes)} images, {n_queries} queries")
