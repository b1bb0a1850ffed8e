"""``viewfinder bench index|search|query``: print speed and memory figures (not tests)."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ...adapters.entries import packaged_names
from ..bench.data import parse_size
from .common import ViewfinderTyper, console

if TYPE_CHECKING:
    from ..bench.search import SearchBench

bench_app = ViewfinderTyper(help="Speed and memory benchmarks (print figures; not tests).", no_args_is_help=True)


def save_report(report: dict[str, Any], path: Path) -> None:
    from ..reports import save_report as save

    save(report, path)


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
    model: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Model entry: a packaged name ({', '.join(packaged_names('models'))}), a YAML file or a model "
            "folder (default: vit-b-32-random). Repeat it to compare encoders in one run: their rounds alternate "
            "(--repeats of each) and each is set against the first."
        ),
    ] = None,
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
    from ..bench.index import bench_index, compare_index

    models = model or ["vit-b-32-random"]
    if len(models) > 1:
        comparison = compare_index(
            list(models), rounds=repeats, n=n, batch_size=batch_size, workers=workers, image_size=size, threads=threads
        )
        table = Table(title=f"indexing {n} {image_size} JPEGs, {repeats} interleaved round(s) per model")
        for column in ("model", "forward img/s", "full img/s", "full vs first", "forward vs first"):
            table.add_column(column)
        for name, r in comparison.results.items():
            table.add_row(
                name,
                f"{r.forward_images_per_second:.1f}",
                f"{r.full_images_per_second:.1f}",
                f"{comparison.full_vs_first[name]:.3f}",
                f"{comparison.forward_vs_first[name]:.3f}",
            )
        console.print(table)
        if json_path:
            from ..reports import machine_info

            _write_json(json_path, {**asdict(comparison), "machine": machine_info()})
        return
    model_name = models[0]
    result = bench_index(model_name, n, batch_size, workers, size, threads, repeats)
    timings = [t for pair in zip(result.forward_runs, result.full_runs, strict=False) for t in pair]
    timings.append(result.forward_runs[-1])
    table = Table(title=f"indexing {n} {image_size} JPEGs with {model_name}", show_header=False)
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
    factories: Annotated[
        str,
        typer.Option(
            help="Index presets, comma-separated; FAISS strings (which hold commas) separated by ';' "
            "(e.g. 'Flat; IVF256,PQ32x8,Rfp16')."
        ),
    ] = "Flat,IVF",
    nprobe: Annotated[
        int | None,
        typer.Option(min=1, help="IVF lists visited (default: tuned to --target-recall, as the index store does)."),
    ] = None,
    target_recall: Annotated[
        float | None,
        typer.Option(min=0.0, max=0.9999, help="Recall@k nprobe is tuned to (default: the index config's, 0.99)."),
    ] = None,
    single_queries: Annotated[
        int | None,
        typer.Option(
            min=1, help="Queries timed one at a time (default: all; 200 for exhaustive indexes over 1e8 floats)."
        ),
    ] = None,
    train_sample: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Train IVF on a random sample of this many vectors (default: what build_index uses, 64 per IVF "
            "list; more is capped there).",
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
    if ";" in factories:  # FAISS strings hold commas: separate them with ';'
        factory_list = tuple(f.strip() for f in factories.split(";") if f.strip())
    else:
        factory_list = tuple(_csv(factories, "--factories"))

    def show(r: SearchBench) -> None:
        console.print(
            f"[dim]n={r.n:,} {r.spec}: built in {r.build_seconds:.1f} s, p50 {r.p50_ms:.2f} ms, "
            f"recall@{r.k} {r.recall:.3f}[/]"
        )

    from ..bench.search import bench_search
    from ..store.faiss_index import TRAIN_PER_LIST, ivf_lists

    run = bench_search(
        dim,
        size_list,
        queries,
        k,
        factory_list,
        nprobe,
        single_queries,
        train_sample,
        seed=seed,
        on_result=show,
        target_recall=target_recall,
    )
    table = Table(title=f"FAISS search, {dim}-d clustered unit vectors, {queries} queries, {run.faiss_threads} threads")
    for column in ("n", "index", "nprobe", "trained on", "build s", "single q", "p50 ms", "p95 ms", "batch q/s"):
        table.add_column(column, justify="right")
    table.add_column(f"recall@{k}", justify="right")
    for column in ("file MB", "RAM MB", "disk MB"):
        table.add_column(column, justify="right")

    def mb(x: float) -> str:
        return "?" if x != x else f"{x:,.0f}" if x >= 10 else f"{x:.2f}"

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
            mb(r.index_mb),
            mb(r.ram_mb),
            mb(r.disk_mb),
        )
    console.print(table)
    flat = {r.n: r for r in run.results if r.spec == "Flat"}
    for r in run.results:
        if r.n in flat and r is not flat[r.n] and r.ram_mb > 0:
            console.print(
                f"n={r.n:,} {r.spec}: {flat[r.n].ram_mb / r.ram_mb:.1f}x less RAM than Flat, recall@{k} "
                f"{r.recall - flat[r.n].recall:+.3f} against it"
                + (f", nprobe tuned to {r.nprobe}" if r.tuned_recall else ""),
                soft_wrap=True,
            )
    fewer = sorted({(r.n, r.spec, r.single_queries) for r in run.results if r.single_queries < queries})
    for n_, spec, count in fewer:
        console.print(f"note: n={n_:,} {spec}: p50/p95 over {count} single queries (a full scan each), not {queries}")
    for r in run.results:
        as_stored = min(r.n, TRAIN_PER_LIST * ivf_lists(r.spec)) if ivf_lists(r.spec) else r.n
        if r.train_vectors and r.train_vectors != as_stored:
            console.print(
                f"note: n={r.n:,} {r.spec} trained on {r.train_vectors:,} vectors; build_index (what `viewfinder "
                f"index` uses) trains on {as_stored:,} (at most {TRAIN_PER_LIST} per IVF list): drop --train-sample to "
                "measure that",
                soft_wrap=True,
            )
    if json_path:
        _write_json(json_path, asdict(run))


@bench_app.command("scale")
def scale_cmd(
    n: Annotated[int, typer.Option(min=1000, help="Vectors in the simulated collection.")] = 10_000_000,
    dim: Annotated[int, typer.Option(min=8, help="Vector dimension (a multiple of 8).")] = 512,
    nlist: Annotated[int | None, typer.Option(min=1, help="IVF lists (default: 4·sqrt(n), a power of 2).")] = None,
    chunk: Annotated[int, typer.Option(min=1, help="Vectors made and added per step.")] = 250_000,
    queries: Annotated[int, typer.Option(min=1, help="Held-out queries (latency and recall).")] = 200,
    target_recall: Annotated[float, typer.Option(min=0.0, max=0.9999, help="Recall@10 nprobe is tuned to.")] = 0.99,
    work_dir: Annotated[
        Path | None, typer.Option(help="Where the index and its fp16 vectors are written (default: the temp folder).")
    ] = None,
    json_path: JsonOpt = None,
) -> None:
    """A collection past memory, simulated: IVF-PQ with exact re-scoring over N vectors made in chunks."""
    from ..bench.scale import bench_scale
    from ..reports import machine_info

    if dim % 8:
        raise typer.BadParameter("must be a multiple of 8 (PQ sub-vectors of 8 dimensions)", param_hint="--dim")
    command = f"viewfinder bench scale --n {n} --dim {dim} --queries {queries}"
    r = bench_scale(n, dim, nlist=nlist, chunk=chunk, queries=queries, target_recall=target_recall, work_dir=work_dir)
    for label, value in [
        ("index", r.spec),
        ("vectors", f"{r.n:,} x {r.dim}"),
        ("build", f"{r.build_seconds / 60:.1f} min (train {r.train_seconds:.0f} s on {r.train_vectors:,})"),
        ("peak RSS", f"{r.peak_anon_mb:,.0f} MB allocated, {r.peak_rss_mb:,.0f} MB with mapped file pages"),
        ("index RAM", f"{r.index_ram_mb:,.0f} MB ({r.ram_bytes_per_item:.0f} B/item)"),
        ("disk", f"{r.index_file_mb + r.vectors_file_mb:,.0f} MB ({r.disk_bytes_per_item:.0f} B/item)"),
        (
            "nprobe",
            f"{r.nprobe}, shortlist {r.refine_factor} x k (recall@{r.k} {r.tuned_recall:.3f} on tuning queries)",
        ),
        ("p50 / p95", f"{r.p50_ms:.2f} / {r.p95_ms:.2f} ms over {r.single_queries} single queries"),
        (f"recall@{r.k}", f"{r.recall:.3f} vs exact search, {r.queries} held-out queries"),
    ]:
        console.print(f"{label:>10}: {value}")
    if json_path:
        report = {"command": command, "machine": machine_info(), "result": asdict(r)}
        report["result"].update(ram_bytes_per_item=r.ram_bytes_per_item, disk_bytes_per_item=r.disk_bytes_per_item)
        save_report(report, json_path)


@bench_app.command("fuzz-images")
def fuzz_images_cmd(
    n: Annotated[int, typer.Option("--n", min=1, help="Mutated files to generate and index.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the files and mutations.")] = 0,
    workers: Annotated[int, typer.Option(min=0, help="Decoding worker processes.")] = 2,
    time_limit: Annotated[float, typer.Option(min=0.0, help="Per-image time limit in seconds.")] = 5.0,
    json_path: JsonOpt = None,
) -> None:
    """Mutated PNG, JPEG, WebP, GIF and TIFF files (truncated, flipped bytes, wrong lengths, huge or zero
    dimensions) through the indexer: indexed, skipped by reason, aborted runs, files over the time limit."""
    import tempfile

    from ...adapters.registry import load_encoder
    from ..bench.fuzz import fuzz_images
    from ..reports import machine_info
    from ..stages.presets import load_preset

    encoder = load_encoder(load_preset("tiny").encoder)
    with tempfile.TemporaryDirectory(prefix="vf-fuzz-images-") as work:
        r = fuzz_images(encoder, Path(work), n=n, seed=seed, workers=workers, time_limit=time_limit)
    console.print(
        f"{r.files} mutated files: {r.indexed} indexed, {r.skipped} skipped, {r.aborts} aborted runs, "
        f"{r.hangs} over the {r.time_limit:g} s limit, in {r.seconds:.0f} s"
    )
    for reason, count in r.reasons.items():
        console.print(f"  skipped, {reason}: {count}")
    if r.aborts:
        console.print(r.abort_detail, markup=False)
    if json_path:
        command = f"viewfinder bench fuzz-images --n {n} --seed {seed} --workers {workers} --time-limit {time_limit:g}"
        save_report({"command": command, "machine": machine_info(), "result": asdict(r)}, json_path)
    if r.aborts:
        raise typer.Exit(1)


@bench_app.command("fuzz-queries")
def fuzz_queries_cmd(
    n: Annotated[int, typer.Option("--n", min=1, help="Generated queries per entry point.")] = 10_000,
    cli_n: Annotated[int | None, typer.Option(min=0, help="Queries through the CLI (default: --n).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the queries.")] = 0,
    json_path: JsonOpt = None,
) -> None:
    """Generated queries (unicode, control and zero-width characters, surrogates, right-to-left marks, empty
    and huge strings, odd k) through the Python API and the CLI, on a small index with the tiny preset:
    answered, refused with a clear error, crashed."""
    import tempfile

    from .. import Pipeline, build_index
    from ..bench.data import make_bench_images
    from ..bench.fuzz import fuzz_cli, fuzz_python
    from ..reports import machine_info

    results = []
    with tempfile.TemporaryDirectory(prefix="vf-fuzz-queries-") as work:
        make_bench_images(Path(work) / "images", 32, size=(64, 48))
        build_index(Path(work) / "images", Path(work) / "index", preset="tiny", progress=False)
        results.append(fuzz_python(Pipeline.from_preset("tiny", index=Path(work) / "index"), n, seed))
        from typer.testing import CliRunner

        app = sys.modules[__package__].app  # the CLI this command runs in, driven in-process as a test drives it
        runner = CliRunner()
        invoke = lambda args: runner.invoke(app, args)  # noqa: E731
        results.append(fuzz_cli(invoke, Path(work) / "index", "tiny", n if cli_n is None else cli_n, seed + 1))
    for r in results:
        console.print(
            f"{r.entry_point}: {r.queries} queries, {r.answered} answered, {r.refused} refused clearly, "
            f"{r.crashes} crashed ({r.seconds:.0f} s)"
        )
        for example in r.crash_examples:
            console.print(f"  crash: {example}", markup=False)
    if json_path:
        command = f"viewfinder bench fuzz-queries --n {n} --seed {seed}" + (f" --cli-n {cli_n}" if cli_n else "")
        save_report({"command": command, "machine": machine_info(), "results": [asdict(r) for r in results]}, json_path)
    if any(r.crashes for r in results):
        raise typer.Exit(1)


@bench_app.command("soak")
def soak_cmd(
    images: Annotated[
        Path | None,
        typer.Option(help="Folder of images to draw the collection from (default: the demo's, generated if missing)."),
    ] = None,
    preset: Annotated[str, typer.Option("--config", "-c", help="Preset to index and search with.")] = "default",
    minutes: Annotated[float, typer.Option(min=0.01, help="How long to run.")] = 10.0,
    collection: Annotated[int, typer.Option(min=10, help="Images in the collection.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the operations.")] = 0,
    json_path: JsonOpt = None,
) -> None:
    """Searches, feedback rounds and incremental re-indexing interleaved for a bounded time: operations,
    errors, RSS growth per 1,000 operations after warm-up, leaked file descriptors."""
    import tempfile

    from ..bench.soak import soak
    from ..reports import machine_info

    if images is None:
        from ..demo.run import default_cache
        from ..scenes.dataset import ensure_scene_dataset
        from ..scenes.generator import SceneGeneratorConfig

        data = ensure_scene_dataset(
            default_cache() / "soak-scenes", SceneGeneratorConfig(seed=0), n_train=0, n_val=0, n_test=collection + 100,
            n_compositional=0,
        )  # fmt: skip
        images = data / "images"
    with tempfile.TemporaryDirectory(prefix="vf-soak-") as work:
        r = soak(images, Path(work), preset=preset, seconds=60 * minutes, collection=collection, seed=seed)
    console.print(
        f"{sum(r.operations.values())} operations in {r.seconds:.0f} s ({r.operations}), {r.errors} errors, "
        f"{r.generations} generations committed; RSS {r.rss_growth_mb_per_1000_ops:+.2f} MB per 1,000 operations "
        f"after warm-up, {r.leaked_fds} descriptors left open",
        soft_wrap=True,
    )
    for example in r.error_examples:
        console.print(example, markup=False)
    if json_path:
        command = f"viewfinder bench soak -c {preset} --minutes {minutes:g} --collection {collection} --seed {seed}"
        save_report({"command": command, "machine": machine_info(), "result": asdict(r)}, json_path)
    if r.errors:
        raise typer.Exit(1)


def _print_query_bench(run: Any, index: Path, k: int) -> None:
    from rich.table import Table

    table = Table(title=f"query latency over {index} ({run.queries} queries, k={k})")
    for column in ("pipeline", "p50 ms", "p95 ms", "ratio to first", "p50 per stage, ms"):
        table.add_column(column)
    for r in run.results:
        per_stage = ", ".join(f"{name} {ms:.2f}" for name, ms in r.stages_p50_ms.items())
        table.add_row(r.preset, f"{r.p50_ms:.2f}", f"{r.p95_ms:.2f}", f"{r.ratio_to_first:.1f}x", per_stage)
    console.print(table)
    console.print(f"load average at start: {run.load_average:.2f}")


@bench_app.command("query")
def query_cmd(
    index: Annotated[Path, typer.Option("--index", "-i", help="Index folder to query.")],
    config: Annotated[
        list[str],
        typer.Option("--config", "-c", help="Preset to time (repeat to compare; the first is the baseline)."),
    ],
    queries: Annotated[int, typer.Option(min=1, help="Queries (texts of the index's own items).")] = 100,
    k: Annotated[int, typer.Option("-k", min=1, help="Hits per query.")] = 10,
    json_path: JsonOpt = None,
) -> None:
    """Query latency of whole pipelines, preset against preset, in one run (p50/p95, per stage, ratio)."""
    from ..bench.query import bench_query, default_queries

    run = bench_query(index, list(config), default_queries(index, queries), k)
    _print_query_bench(run, index, k)
    if json_path:
        _write_json(json_path, asdict(run))


@bench_app.command("rerank")
def rerank_cmd(
    index: Annotated[Path, typer.Option("--index", "-i", help="An image index (e.g. the demo's).")],
    model: Annotated[str, typer.Option(help="Matcher model entry.")] = "scene-reranker",
    k: Annotated[int, typer.Option("-k", min=1, help="Candidates reranked (ITC).")] = 128,
    itm_k: Annotated[int, typer.Option("--itm-k", min=1, help="Of those, how many ITM rescores.")] = 8,
    queries: Annotated[int, typer.Option(min=1, help="Queries (texts of the index's own items).")] = 50,
    json_path: JsonOpt = None,
) -> None:
    """CLIP-only queries against CLIP + rerank of the top k, with and without the caches, and with ITM
    on all k, in one run (the caches are filled for the whole index first, as `index --with rerank` does)."""
    from ..bench.query import bench_query, default_queries, rerank_presets

    run = bench_query(
        index, rerank_presets(index, model, k, itm_k), default_queries(index, queries), 10, fill_caches=True
    )
    _print_query_bench(run, index, 10)
    if json_path:
        _write_json(json_path, asdict(run))


@bench_app.command("agent")
def agent_cmd(
    index: Annotated[Path, typer.Option("--index", "-i", help="An image index (e.g. the demo's).")],
    config: Annotated[str, typer.Option("--config", "-c", help="A preset with LLM stages.")] = "agent",
    queries: Annotated[int, typer.Option(min=1, help="Queries (texts of the index's own items).")] = 10,
    rounds: Annotated[int, typer.Option(min=1, help="Feedback (or dialogue) rounds per query.")] = 2,
    mode: Annotated[str, typer.Option(help="feedback, composed (reference image + edit) or dialogue.")] = "feedback",
    json_path: JsonOpt = None,
) -> None:
    """Latency of agent rounds (round 0 and feedback, composed or dialogue rounds), per stage, and the
    LLM's tokens/s."""
    from rich.table import Table

    from ..bench.agent import bench_agent
    from ..bench.query import default_queries

    preset = "dialogue" if mode == "dialogue" and config == "agent" else config  # no per-round normalising
    run = bench_agent(index, preset, default_queries(index, queries), rounds, mode=mode)
    shape = "1 round" if mode == "composed" else f"{1 + rounds} rounds"
    table = Table(title=f"{mode} rounds over {index} ({run.queries} queries x {shape}, preset {run.preset})")
    for column in ("round", "p50 ms", "p50 per stage, ms"):
        table.add_column(column)
    for kind, total in (("round 0", run.round0_p50_ms), ("feedback", run.feedback_round_p50_ms)):
        if not run.stages_p50_ms.get(kind):
            continue  # a composed query has round 0 only
        per_stage = ", ".join(f"{name} {ms:.1f}" for name, ms in run.stages_p50_ms.get(kind, {}).items())
        table.add_row(kind, f"{total:.1f}", per_stage)
    console.print(table)
    tps = run.llm_output_tokens_per_s
    later = f"later round p95 {run.feedback_round_p95_ms:.1f} ms; " if run.stages_p50_ms.get("feedback") else ""
    console.print(f"{later}LLM output tokens/s: {tps:.1f}" if tps else later.rstrip("; "))
    if json_path:
        _write_json(json_path, asdict(run))


@bench_app.command("genid")
def genid_cmd(
    index: Annotated[Path, typer.Option("--index", "-i", help="The index the identifier model memorised.")],
    model: Annotated[Path, typer.Option("--model", "-m", help="A trained identifier model folder.")],
    queries: Annotated[int, typer.Option(min=1, help="Queries (texts of the index's own items).")] = 50,
    beams: Annotated[int, typer.Option(min=1, help="Beams of the constrained decoding.")] = 10,
    json_path: JsonOpt = None,
) -> None:
    """Identifier decoding (beam search constrained to the index's ids) per query, beside CLIP's query
    encoding and FAISS search, in one run."""
    from ..bench.genid import bench_genid
    from ..bench.query import default_queries

    run = bench_genid(index, model, default_queries(index, queries), beams=beams)
    console.print(
        f"{run.queries} queries, {run.items} items, {run.scheme} ids, beam {run.beams}: decode p50 "
        f"{run.decode_p50_ms:.1f} ms (p95 {run.decode_p95_ms:.1f}); FAISS search p50 {run.faiss_search_p50_ms:.2f} ms "
        f"(p95 {run.faiss_search_p95_ms:.2f}), CLIP query encoding p50 {run.clip_encode_p50_ms:.1f} ms; decoding takes "
        f"{run.decode_over_search:.0f}x the search",
        soft_wrap=True,
    )
    if json_path:
        _write_json(json_path, asdict(run))


@bench_app.command("serve")
def serve_cmd(
    index: Annotated[Path, typer.Option("--index", "-i", help="An index to serve (e.g. the demo's).")],
    config: Annotated[str | None, typer.Option("--config", "-c", help="Preset (default: the index's).")] = None,
    clients: Annotated[str, typer.Option(help="Concurrency levels, comma-separated.")] = "1,4,16,64",
    seconds: Annotated[float, typer.Option(min=1, help="Seconds per level (and for the bare rate).")] = 10.0,
    workers: Annotated[int, typer.Option(min=1, help="The server's copies of the pipeline (--workers).")] = 2,
    queue: Annotated[int, typer.Option(min=0, help="The server's queue of waiting model jobs.")] = 64,
    overload: Annotated[int, typer.Option(min=1, help="Simultaneous requests of the overload burst.")] = 256,
    soak: Annotated[float, typer.Option(min=0, help="Seconds of a soak at 16 clients (RSS sampled).")] = 0.0,
    json_path: JsonOpt = None,
) -> None:
    """Load on `viewfinder serve` (a subprocess on loopback): text search and feedback rounds at each
    concurrency, beside the bare in-process Pipeline.search rate, and an overload burst."""
    from rich.table import Table

    from ..bench.query import default_queries
    from ..bench.serve import bench_serve, report

    levels = tuple(int(n) for n in _csv(clients, "--clients"))
    run = bench_serve(index, config, default_queries(index, 50), levels, seconds, workers, queue, overload, soak)
    bare = run.bare
    table = Table(title=f"viewfinder serve {index} ({bare['preset']}, {workers} workers, queue {queue})")
    for column in ("requests", "clients", "req/s", "p50 ms", "p95 ms", "errors", "5xx", "server RSS MB"):
        table.add_column(column)
    rate, p50, p95 = (f"{bare[key]:.1f}" for key in ("requests_per_s", "p50_ms", "p95_ms"))
    table.add_row("bare Pipeline.search", "1", rate, p50, p95, "", "", "")
    for lv in run.levels:
        rss = "" if lv.rss_mb_after is None else f"{lv.rss_mb_after:.0f}"
        figures = (f"{v:.1f}" for v in (lv.requests_per_s, lv.p50_ms, lv.p95_ms))
        table.add_row(lv.kind, str(lv.clients), *figures, str(lv.errors), str(lv.server_errors), rss)
    console.print(table)
    o = run.overload
    refused = (
        f"503 p50 {o['refused_503_p50_ms']:.1f} ms, p95 {o['refused_503_p95_ms']:.1f} ms (in the app: p50 "
        f"{o['refused_503_in_app_p50_ms']:.1f} ms, p95 {o['refused_503_in_app_p95_ms']:.1f} ms)"
    )
    burst = f"{o['simultaneous_requests']} at once against a pool of {o['pool']}"
    console.print(f"overload: {burst}: {o['status']}; {refused}", soft_wrap=True)
    console.print(f"goals: {run.goals}", soft_wrap=True)
    if json_path:
        _write_json(json_path, report(run))
