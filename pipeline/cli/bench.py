"""``viewfinder bench index|search``: print speed and memory figures (not tests)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..bench.data import parse_size

if TYPE_CHECKING:
    from rich.console import Console

    from ..bench.search import SearchBench

bench_app = typer.Typer(help="Speed and memory benchmarks (print figures; not tests).", no_args_is_help=True)


def _console() -> Console:
    """Rich console; 160 columns when not a terminal, so tables piped to a file are not cut."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def _write_json(path: Path, data: Any) -> None:
    from ..store.fsutil import atomic_write_json

    atomic_write_json(path, data)


def _csv(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise typer.BadParameter(f"{what}: give a comma-separated list")
    return items


JsonOpt = Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON to this file.")]


@bench_app.command("index")
def index_cmd(
    model: Annotated[str, typer.Option(help="Model entry (configs/models) or YAML file.")] = "vit-b-32-random",
    n: Annotated[int, typer.Option("--n", min=1, help="Number of generated images.")] = 256,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch (indexer and forward pass).")] = 32,
    workers: Annotated[
        int | None, typer.Option(min=0, help="Decoding worker processes (default: the index config's).")
    ] = None,
    image_size: Annotated[str, typer.Option(help="Generated JPEG size, WIDTHxHEIGHT.")] = "320x240",
    threads: Annotated[int | None, typer.Option(min=1, help="torch intra-op threads (default: torch's).")] = None,
    repeats: Annotated[
        int, typer.Option(min=1, help="Full runs, alternating with forward passes; the best of each counts.")
    ] = 1,
    json_path: JsonOpt = None,
) -> None:
    """Indexing throughput: the full pipeline against the encoder's forward pass alone."""
    from rich.table import Table

    try:
        size = parse_size(image_size)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--image-size") from exc
    from ...adapters.open_clip_encoder import ModelLoadError
    from ..bench.index import bench_index
    from ..config import ConfigError

    try:
        result = bench_index(model, n, batch_size, workers, size, threads, repeats)
    except (ConfigError, ModelLoadError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from exc
    timings = [t for pair in zip(result.forward_runs, result.full_runs, strict=False) for t in pair]
    timings.append(result.forward_runs[-1])
    table = Table(title=f"indexing {n} {image_size} JPEGs with {model}", show_header=False)
    rows = [
        ("batch size / workers / torch threads / cores", f"{batch_size} / {result.workers} / "
         f"{result.torch_threads} / {result.cpu_cores}"),
        ("JPEG size (mean)", f"{result.jpeg_kb:.1f} KB"),
        ("decode + preprocess (1 core)", f"{result.decode_ms_per_image:.2f} ms/img"),
        ("forward pass alone", f"{result.forward_images_per_second:.1f} img/s ({result.forward_seconds:.1f} s)"),
        ("full pipeline (Indexer.run)", f"{result.full_images_per_second:.1f} img/s ({result.full_seconds:.1f} s)"),
        ("indexer's embedding loop", f"{result.embed_loop_images_per_second:.1f} img/s"),
        ("ratio full / forward", f"{result.ratio:.3f}"),
        ("bound if decoding shares the cores", f"{result.overlap_bound:.3f}"),
        ("timings, s (forward, full, ..., forward)", ", ".join(f"{t:.1f}" for t in timings)),
        ("forward timings spread", f"{100 * result.forward_spread:.1f} %"),
        ("load average at start", f"{result.load_average:.2f}"),
    ]  # fmt: skip
    for label, value in rows:
        table.add_row(label, value)
    console = _console()
    console.print(table)
    if (result.forward_spread > 0.15 and result.forward_seconds > 1) or result.load_average > 0.5 * result.cpu_cores:
        console.print(
            "[yellow]note:[/] the machine was busy (load average or forward timings unsteady): other work skews "
            "the ratio; rerun on a quiet machine, or with --repeats 3 (the best time of each counts)"
        )
    if json_path:
        _write_json(json_path, asdict(result))


@bench_app.command("search")
def search_cmd(
    dim: Annotated[int, typer.Option(min=1, help="Vector dimension.")] = 512,
    sizes: Annotated[str, typer.Option(help="Collection sizes, comma-separated.")] = "100000,1000000",
    queries: Annotated[int, typer.Option(min=1, help="Queries (batch throughput and recall).")] = 1000,
    k: Annotated[int, typer.Option("--k", min=1, help="Neighbours per query (recall@k).")] = 10,
    factories: Annotated[str, typer.Option(help="Index presets or FAISS strings, comma-separated.")] = "Flat,IVF",
    nprobe: Annotated[int | None, typer.Option(min=1, help="IVF lists visited (default: the index config's).")] = None,
    single_queries: Annotated[
        int | None,
        typer.Option(
            min=1, help="Queries timed one at a time (default: all; 200 for exhaustive indexes over 1e8 floats)."
        ),
    ] = None,
    train_sample: Annotated[
        int | None,
        typer.Option(
            min=0, help="Train IVF on at most this many vectors (default 64 per list; 0: all, as build_index)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 0,
    json_path: JsonOpt = None,
) -> None:
    """FAISS search: build time, latency, batch throughput, recall@k against exact search, and size."""
    from rich.table import Table

    try:
        size_list = tuple(int(s) for s in _csv(sizes, "--sizes"))
    except ValueError as exc:
        raise typer.BadParameter(f"sizes must be integers: {exc}", param_hint="--sizes") from exc
    if any(s < 1 for s in size_list):
        raise typer.BadParameter("sizes must be >= 1", param_hint="--sizes")
    factory_list = tuple(_csv(factories, "--factories"))
    console = _console()

    def show(r: SearchBench) -> None:
        console.print(
            f"[dim]n={r.n:,} {r.spec}: built in {r.build_seconds:.1f} s, p50 {r.p50_ms:.2f} ms, "
            f"recall@{r.k} {r.recall:.3f}[/]"
        )

    from ..bench.search import bench_search
    from ..store.faiss_index import IndexBuildError

    try:
        run = bench_search(
            dim, size_list, queries, k, factory_list, nprobe, single_queries, train_sample, seed=seed, on_result=show
        )
    except IndexBuildError as exc:
        raise typer.BadParameter(str(exc), param_hint="--factories") from exc
    table = Table(title=f"FAISS search, {dim}-d clustered unit vectors, {queries} queries, {run.faiss_threads} threads")
    for column in ("n", "index", "nprobe", "trained on", "build s", "single q", "p50 ms", "p95 ms", "batch q/s"):
        table.add_column(column, justify="right")
    table.add_column(f"recall@{k}", justify="right")
    table.add_column("MB", justify="right")
    for r in run.results:
        table.add_row(
            f"{r.n:,}",
            r.spec,
            "-" if r.nprobe is None else str(r.nprobe),
            f"{r.train_vectors:,}" if r.train_vectors else "-",
            f"{r.build_seconds:.1f}",
            str(r.single_queries),
            f"{r.p50_ms:.2f}",
            f"{r.p95_ms:.2f}",
            f"{r.batch_queries_per_second:,.0f}",
            f"{r.recall:.3f}",
            f"{r.index_mb:,.0f}" if r.index_mb >= 10 else f"{r.index_mb:.2f}",
        )
    console.print(table)
    fewer = sorted({(r.n, r.spec, r.single_queries) for r in run.results if r.single_queries < queries})
    for n_, spec, count in fewer:
        console.print(f"note: n={n_:,} {spec}: p50/p95 over {count} single queries (a full scan each), not {queries}")
    sampled = [r for r in run.results if 0 < r.train_vectors < r.n]
    for r in sampled:
        console.print(
            f"note: n={r.n:,} {r.spec} trained on a {r.train_vectors:,}-vector sample; build_index trains on all "
            f"{r.n:,} (measure that with --train-sample 0)"
        )
    if json_path:
        _write_json(json_path, asdict(run))
