"""The ``viewfinder`` command line. Heavy imports happen inside commands, so ``--help`` is fast."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="viewfinder: agentic image-text retrieval (CLIP preselection over a FAISS index store).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="Pipeline preset: a packaged name (e.g. 'default') or a YAML file."),
]


class _QuietRoot(logging.Filter):
    """open_clip logs chatty INFO/WARNING lines on the root logger; keep them for --verbose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "root" or record.levelno >= logging.ERROR


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if not verbose:
        handler.addFilter(_QuietRoot())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
) -> None:
    _setup_logging(verbose)


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


def _user_errors() -> tuple[type[BaseException], ...]:
    from viewfinder.adapters.open_clip_encoder import ModelLoadError
    from viewfinder.pipeline.config import ConfigError
    from viewfinder.pipeline.faiss_index import IndexBuildError
    from viewfinder.pipeline.search import QueryError
    from viewfinder.pipeline.sources import SourceError
    from viewfinder.pipeline.store import StoreError

    return (
        ConfigError,
        ModelLoadError,
        StoreError,
        SourceError,
        QueryError,
        IndexBuildError,
        FileNotFoundError,
    )


@app.command("index")
def index_cmd(
    source: Annotated[str, typer.Argument(help="Folder of images (recursive) or a JSONL manifest.")],
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder (created if missing).")],
    config: ConfigOpt = None,
    modality: Annotated[str, typer.Option(help="'image' (default) or 'text' (the captions of a manifest).")] = "image",
    rebuild: Annotated[bool, typer.Option(help="Re-embed everything (e.g. with another encoder).")] = False,
    factory: Annotated[
        str | None, typer.Option(help="FAISS index: Flat, IVF, IVFPQ, HNSW or a factory string.")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Decoding worker processes.")] = None,
    report: Annotated[Path | None, typer.Option(help="Also write the run's report as JSON here.")] = None,
) -> None:
    """Index a folder or manifest into an on-disk FAISS index (incremental, resumable)."""
    if modality not in ("image", "text"):
        _fail(f"--modality must be 'image' or 'text', got {modality!r}")
    try:
        from viewfinder.pipeline.config import load_preset
        from viewfinder.pipeline.fsutil import atomic_write_json
        from viewfinder.pipeline.indexer import Indexer
        from viewfinder.pipeline.models import load_encoder, portable_entry

        preset = load_preset(config or "default")
        if factory:
            preset.index.factory = factory
        if workers is not None:
            preset.index.num_workers = workers
        encoder = load_encoder(preset.encoder)
        indexer = Indexer(encoder, preset.index, encoder_entry=portable_entry(preset.encoder))
        result = indexer.run(source, index, modality=modality, rebuild=rebuild)  # type: ignore[arg-type]
    except _user_errors() as exc:
        _fail(str(exc))
        return
    atomic_write_json(Path(result.index) / "last_run.json", asdict(result))
    if report:
        atomic_write_json(report, asdict(result))
    table = Table(title=f"indexed {result.source} -> {result.index}", show_header=False)
    for label, value in [
        ("items in index", result.count),
        ("added", result.added),
        ("re-embedded (changed)", result.reembedded),
        ("removed (gone from source)", result.removed),
        ("unchanged", result.unchanged),
        ("resumed from an interrupted run", result.resumed),
        ("skipped", len(result.skipped)),
        ("seconds", f"{result.seconds:.1f}"),
        ("embedded per second", f"{result.embedded_per_second:.1f}"),
    ]:
        table.add_row(label, str(value))
    console.print(table)
    for where, reason in result.skipped[:20]:
        console.print(f"  [yellow]skipped[/] {where}: {reason}")
    if len(result.skipped) > 20:
        console.print(f"  … and {len(result.skipped) - 20} more (see {Path(result.index) / 'last_run.json'})")


@app.command("search")
def search_cmd(
    query: Annotated[str | None, typer.Argument(help="Text to search for.")] = None,
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder.")] = Path("index"),
    image: Annotated[Path | None, typer.Option(help="Search with this image instead of text.")] = None,
    k: Annotated[int, typer.Option("-k", help="Number of hits.")] = 10,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (query, hits, timings).")] = False,
) -> None:
    """Search an index with a text (or --image PATH)."""
    try:
        from viewfinder.pipeline.search import Searcher

        searcher = Searcher.open(index, config)
        result = searcher.search(query, image=image, k=k)
    except _user_errors() as exc:
        _fail(str(exc))
        return
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    title = f"{result.query!r}" if result.query is not None else f"image {result.image}"
    table = Table(title=f"top {len(result.hits)} for {title}" + (" (query truncated)" if result.truncated else ""))
    for column in (
        "rank",
        "score",
        "id",
        "path" if searcher.store.manifest.modality == "image" else "text",
    ):
        table.add_column(column)
    for hit in result.hits:
        last = hit.path if searcher.store.manifest.modality == "image" else (hit.text or "")
        table.add_row(str(hit.rank), f"{hit.score:.4f}", hit.key, last)
    console.print(table)
    console.print(f"[dim]{1000 * sum(result.timings.values()):.1f} ms[/]")


# Sub-commands live in their own modules; each keeps its heavy imports inside the command.
from viewfinder.pipeline.bench import bench_app  # noqa: E402
from viewfinder.pipeline.demo_cli import demo_cmd  # noqa: E402
from viewfinder.pipeline.eval_cli import eval_cmd  # noqa: E402
from viewfinder.pipeline.scenes.cli import app as scenes_app  # noqa: E402
from viewfinder.pipeline.train_cli import train_app  # noqa: E402

app.command("demo")(demo_cmd)
app.command("eval")(eval_cmd)
app.add_typer(train_app, name="train")
app.add_typer(bench_app, name="bench")
app.add_typer(scenes_app, name="scenes", help="The synthetic scene benchmark: generate and inspect.")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
