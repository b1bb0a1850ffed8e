"""Speed and memory benchmarks: indexing throughput and FAISS search. They print figures; they are not tests.

* :func:`bench_index` runs the real :class:`~viewfinder.pipeline.indexer.Indexer` over generated
  JPEGs and compares its rate with the encoder's forward pass alone on ready tensors, so the
  ratio says how much the pipeline around the model (decode, preprocess, store) costs.
* :func:`bench_search` builds FAISS indexes with :func:`~viewfinder.pipeline.faiss_index.build_index`
  over seeded clustered vectors and reports build time, latency, throughput, recall and size.

Heavy libraries (torch, faiss, open_clip) are imported inside the functions, so importing this
module (and ``viewfinder --help``) stays cheap.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer

if TYPE_CHECKING:
    import faiss
    from rich.console import Console

    from viewfinder.adapters.base import ImageTextEncoder

logger = logging.getLogger(__name__)

bench_app = typer.Typer(help="Speed and memory benchmarks (print figures; not tests).", no_args_is_help=True)


# ----------------------------------------------------------------------------------------------
# Indexing throughput


@dataclass
class IndexBench:
    """Figures of one indexing benchmark: the full pipeline against the encoder's forward pass alone."""

    model: str
    images: int
    batch_size: int
    workers: int
    """DataLoader decoding worker processes used by the indexer."""
    torch_threads: int
    """torch intra-op threads in the main process during the run."""
    cpu_cores: int
    image_size: tuple[int, int]
    """(width, height) of the generated JPEGs."""
    jpeg_kb: float
    """Mean size of the generated JPEG files."""
    decode_ms_per_image: float
    """Read + decode + preprocess, one image in the main process (one core)."""
    repeats: int
    forward_seconds: float
    """Best of the forward-pass timings (one before the first full run and one after each)."""
    forward_images_per_second: float
    """``encode_image_tensors`` alone on pre-stacked preprocessed tensors, same batches."""
    full_seconds: float
    """Best of the full-run timings."""
    full_images_per_second: float
    """Whole ``Indexer.run`` (listing, decode, preprocess, encode, checkpoint, FAISS commit) per image."""
    embed_loop_images_per_second: float
    """The indexer's own rate for its embedding loop alone (``IndexReport.embedded_per_second``), best run."""
    ratio: float
    """full_images_per_second / forward_images_per_second."""
    overlap_bound: float
    """Best ratio possible when decoding takes CPU time from the encoder on the same cores:
    forward / (forward + decode / cores)."""
    forward_spread: float
    """(slowest - best) / best forward timing: how steady the machine was (under 0.1 on a quiet one)."""
    load_average: float
    """1-minute load average when the benchmark started (others' work skews the figures)."""
    forward_runs: list[float] = field(default_factory=list)
    """Every forward-pass timing in seconds, in the order taken (they alternate with the full runs)."""
    full_runs: list[float] = field(default_factory=list)
    """Every full-run timing in seconds, in the order taken."""


def _load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def parse_size(text: str) -> tuple[int, int]:
    """``"320x240"`` -> (320, 240)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ValueError(f"image size must look like WIDTHxHEIGHT (e.g. 320x240), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def make_bench_images(folder: Path, n: int, size: tuple[int, int] = (320, 240), seed: int = 0) -> list[Path]:
    """Write ``n`` seeded photo-like JPEGs (gradient, noise and shapes, so decoding costs something)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)  # (H, W) each
    paths = []
    for i in range(n):
        slopes = rng.uniform(-0.5, 0.5, size=(2, 3)).astype(np.float32)
        offset = rng.uniform(40, 215, size=3).astype(np.float32)
        base = xx[..., None] * slopes[0] * 255 / width + yy[..., None] * slopes[1] * 255 / height + offset  # (H, W, 3)
        noise = rng.normal(0.0, 12.0, size=(height, width, 3)).astype(np.float32)
        image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(3, 10))):
            x0, x1 = sorted(rng.integers(0, width, size=2).tolist())
            y0, y1 = sorted(rng.integers(0, height, size=2).tolist())
            colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape((x0, y0, x1 + 1, y1 + 1), fill=colour)
        path = folder / f"bench_{i:05d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def bench_index(
    model: str | ImageTextEncoder = "vit-b-32-random",
    n: int = 256,
    batch_size: int = 32,
    workers: int | None = None,
    image_size: tuple[int, int] = (320, 240),
    threads: int | None = None,
    repeats: int = 1,
    seed: int = 0,
) -> IndexBench:
    """Index ``n`` generated JPEGs with the real :class:`Indexer` and time the encoder alone on the same images.

    ``model`` is a model entry (name, YAML path) or an encoder already loaded (tests).
    ``workers`` defaults to :class:`IndexConfig`'s ``num_workers``; ``threads`` sets
    ``torch.set_num_threads`` for the run (restored afterwards; None leaves torch's setting).
    Forward and full runs alternate (forward first and last, ``repeats`` full runs into fresh
    indexes) and the best time of each counts, so a busy machine skews the ratio less.
    """
    import torch

    from viewfinder.pipeline.config import IndexConfig
    from viewfinder.pipeline.images import decode_image
    from viewfinder.pipeline.indexer import Indexer
    from viewfinder.pipeline.models import load_encoder

    if n < 1 or batch_size < 1 or repeats < 1:
        raise ValueError("n, batch_size and repeats must be >= 1")
    config = IndexConfig(factory="Flat", batch_size=batch_size)
    if workers is not None:
        config = replace(config, num_workers=workers)  # validated again
    load_average = _load_average()
    previous_threads = torch.get_num_threads()
    try:
        encoder = load_encoder(model) if isinstance(model, str) else model  # (an entry's `threads` applies here)
        if threads is not None:
            torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory(prefix="viewfinder-bench-") as tmp:
            images_dir = Path(tmp) / "images"
            logger.info("writing %d %dx%d JPEGs to %s", n, *image_size, images_dir)
            paths = make_bench_images(images_dir, n, image_size, seed)
            jpeg_kb = sum(p.stat().st_size for p in paths) / len(paths) / 1024

            # Preprocess in the main process on one thread, as a DataLoader worker does (timed: the
            # decode cost the workers carry), and stack once.
            transform = encoder.image_transform
            run_threads = torch.get_num_threads()
            torch.set_num_threads(1)
            start = time.perf_counter()
            tensors = [transform(decode_image(p.read_bytes(), config.max_image_pixels)) for p in paths]
            decode_seconds = time.perf_counter() - start
            torch.set_num_threads(run_threads)
            pixels = torch.stack(tensors)  # (N, 3, H, W)
            del tensors

            def forward_pass() -> float:
                start = time.perf_counter()
                for lo in range(0, n, batch_size):
                    encoder.encode_image_tensors(pixels[lo : lo + batch_size])  # (B, D)
                return time.perf_counter() - start

            encoder.encode_image_tensors(pixels[:batch_size])  # warm-up: first call allocates, picks kernels
            forward_runs, full_runs, loop_rate = [forward_pass()], [], 0.0
            for r in range(repeats):
                start = time.perf_counter()
                report = Indexer(encoder, config, progress=False).run(images_dir, Path(tmp) / f"index{r}")
                full_runs.append(time.perf_counter() - start)
                if report.count != n or report.skipped:
                    raise RuntimeError(f"benchmark indexing lost images: {report.count}/{n}, {report.skipped[:3]}")
                loop_rate = max(loop_rate, report.embedded_per_second)
                forward_runs.append(forward_pass())
        torch_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    forward_seconds, full_seconds = min(forward_runs), min(full_runs)
    forward_rate = n / forward_seconds
    full_rate = n / full_seconds
    return IndexBench(
        model=model if isinstance(model, str) else model.name,
        images=n,
        batch_size=batch_size,
        workers=config.num_workers,
        torch_threads=torch_threads,
        cpu_cores=cores,
        image_size=image_size,
        jpeg_kb=jpeg_kb,
        decode_ms_per_image=1000 * decode_seconds / n,
        repeats=repeats,
        forward_seconds=forward_seconds,
        forward_images_per_second=forward_rate,
        full_seconds=full_seconds,
        full_images_per_second=full_rate,
        embed_loop_images_per_second=loop_rate,
        ratio=full_rate / forward_rate,
        overlap_bound=forward_seconds / (forward_seconds + decode_seconds / cores),
        forward_spread=(max(forward_runs) - forward_seconds) / forward_seconds,
        load_average=load_average,
        forward_runs=forward_runs,
        full_runs=full_runs,
    )


# ----------------------------------------------------------------------------------------------
# Search


@dataclass
class SearchBench:
    """Figures of one FAISS index (one factory at one collection size)."""

    factory: str
    """As asked (a preset such as ``IVF``, or a FAISS factory string)."""
    spec: str
    """The FAISS factory string it resolved to for this size."""
    n: int
    dim: int
    nprobe: int | None
    """IVF lists visited per query (None for indexes without lists)."""
    train_vectors: int
    """Vectors the index was trained on (0: no training needed)."""
    build_seconds: float
    """Train + add (what committing an index of this size costs)."""
    single_queries: int
    """Queries searched one at a time for the latency figures."""
    p50_ms: float
    p95_ms: float
    batch_queries: int
    batch_queries_per_second: float
    """All queries in one ``search`` call."""
    recall: float
    """recall@k of the batch search against exact inner-product search."""
    k: int
    index_mb: float
    """Size of the serialised index (vectors, lists, ids)."""


@dataclass
class SearchBenchRun:
    """All figures of one search benchmark run and how the data was made."""

    dim: int
    queries: int
    k: int
    clusters: int
    rank: int
    """Dimension of the subspace the clusters live in (see :class:`Mixture`)."""
    spread: float
    noise: float
    seed: int
    faiss_threads: int
    load_average: float
    """1-minute load average when the benchmark started (others' work skews the figures)."""
    results: list[SearchBench] = field(default_factory=list)


@dataclass
class Mixture:
    """A mixture of Gaussians on a random low-dimensional subspace, the stand-in for real embeddings.

    Real image embeddings are clustered and have a low intrinsic dimension; uniform noise in 512-d
    has neither (every vector is about as far from every other), which makes recall meaningless,
    and well-separated isotropic clusters make IVF recall trivially 1.0. The defaults give
    recall@10 around 0.9 for the IVF preset at nprobe 16 over 100k 512-d vectors.
    """

    basis: np.ndarray
    """(r, D) random basis of the subspace."""
    centers: np.ndarray
    """(C, r) cluster centres, standard normal in the subspace."""
    spread: float = 1.2
    """Standard deviation of a cluster around its centre, in the subspace (centres have 1.0)."""
    noise: float = 0.3
    """Norm of the isotropic full-dimensional noise added to each point (before normalising)."""

    @classmethod
    def random(cls, dim: int, clusters: int = 1000, rank: int = 64, seed: int = 0) -> Mixture:
        rng = np.random.default_rng([seed, 0])
        rank = min(rank, dim)
        basis = rng.standard_normal((rank, dim), dtype=np.float32) / np.float32(np.sqrt(rank))  # (r, D)
        return cls(basis, rng.standard_normal((clusters, rank), dtype=np.float32))


def clustered_vectors(n: int, mixture: Mixture, rng: np.random.Generator, chunk: int = 65_536) -> np.ndarray:
    """(n, D) float32 unit vectors drawn from ``mixture``, made in chunks (1M x 512 is 2 GB)."""
    rank, dim = mixture.basis.shape
    out = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        latent = rng.standard_normal((hi - lo, rank), dtype=np.float32) * np.float32(mixture.spread)  # (b, r)
        latent += mixture.centers[rng.integers(0, len(mixture.centers), size=hi - lo)]
        block = latent @ mixture.basis  # (b, D)
        block += rng.standard_normal((hi - lo, dim), dtype=np.float32) * np.float32(mixture.noise / np.sqrt(dim))
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[lo:hi] = block
    return out


def _is_exhaustive(spec: str) -> bool:
    """True when a search scans every vector (Flat, PQ without lists): single queries are slow at scale."""
    return not re.search(r"IVF|HNSW|NSG|LSH", spec)


def _build(spec: str, xb: np.ndarray, train_sample: int, rng: np.random.Generator) -> tuple[faiss.Index, int]:
    """Build through :func:`build_index`; with ``train_sample`` > 0, train on that many random vectors only."""
    from viewfinder.pipeline.faiss_index import build_index, min_training_vectors

    ids = np.arange(len(xb), dtype=np.int64)
    needs_training = min_training_vectors(spec) > 0
    if not needs_training or train_sample <= 0 or train_sample >= len(xb):
        return build_index(spec, xb, ids), len(xb) if needs_training else 0
    # build_index trains on everything it is given: give it the sample, then add the rest.
    picked = np.zeros(len(xb), dtype=bool)
    picked[rng.choice(len(xb), size=train_sample, replace=False)] = True
    index = build_index(spec, xb[picked], ids[picked])
    step = 131_072
    for lo in range(0, len(xb), step):
        rest = ~picked[lo : lo + step]
        if rest.any():
            index.add_with_ids(np.ascontiguousarray(xb[lo : lo + step][rest]), ids[lo : lo + step][rest])
    return index, train_sample


def _nprobe_of(index: faiss.Index) -> int | None:
    import faiss

    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    return int(inner.nprobe) if hasattr(inner, "nprobe") else None


def bench_search(
    dim: int = 512,
    sizes: tuple[int, ...] = (100_000, 1_000_000),
    queries: int = 1000,
    k: int = 10,
    factories: tuple[str, ...] = ("Flat", "IVF"),
    nprobe: int | None = None,
    single_queries: int | None = None,
    train_sample: int | None = None,
    clusters: int = 1000,
    rank: int = 64,
    seed: int = 0,
    on_result: Callable[[SearchBench], None] | None = None,
) -> SearchBenchRun:
    """Build each factory at each size over seeded clustered unit vectors (:class:`Mixture`) and measure it.

    ``nprobe`` defaults to :class:`IndexConfig`'s. ``single_queries`` (latency) defaults to all
    ``queries``, but to at most 200 for exhaustive indexes over more than 10^8 floats (a
    one-query scan of 1M x 512 takes a large fraction of a second). ``train_sample`` caps the
    vectors an index is trained on (None: 64 per IVF list, FAISS's own guidance being 30-256;
    0: all of them, as ``build_index`` does). ``on_result`` is called as each figure is ready.
    """
    import faiss

    from viewfinder.pipeline.config import IndexConfig
    from viewfinder.pipeline.faiss_index import resolve_factory, set_search_params

    if dim < 1 or queries < 1 or k < 1 or not sizes or not factories:
        raise ValueError("dim, queries and k must be >= 1, with at least one size and one factory")
    defaults = IndexConfig()
    probe = nprobe if nprobe is not None else defaults.nprobe
    mixture = Mixture.random(dim, clusters, rank, seed)
    xq = clustered_vectors(queries, mixture, np.random.default_rng([seed, 1]))  # (Q, D), same distribution
    run = SearchBenchRun(
        dim,
        queries,
        k,
        clusters,
        mixture.basis.shape[0],
        mixture.spread,
        mixture.noise,
        seed,
        faiss.omp_get_max_threads(),
        _load_average(),
    )

    for n in sizes:
        logger.info("generating %d x %d clustered vectors", n, dim)
        xb = clustered_vectors(n, mixture, np.random.default_rng([seed, 2, n]))  # (N, D)
        start = time.perf_counter()
        _, exact = faiss.knn(xq, xb, min(k, n), metric=faiss.METRIC_INNER_PRODUCT)  # exact (Q, k), like IndexFlatIP
        logger.info("n=%d: exact search for %d queries in %.1fs", n, queries, time.perf_counter() - start)
        for factory in factories:
            spec = resolve_factory(factory, dim, n)
            sample = train_sample if train_sample is not None else 64 * _nlist(spec)
            logger.info("n=%d: building %s", n, spec)
            start = time.perf_counter()
            index, trained_on = _build(spec, xb, sample, np.random.default_rng([seed, 3, n]))
            build_seconds = time.perf_counter() - start
            set_search_params(index, probe, defaults.ef_search)

            n_single = single_queries if single_queries is not None else queries
            if single_queries is None and _is_exhaustive(spec) and n * dim > 100_000_000:
                n_single = min(queries, 200)
            n_single = min(n_single, queries)
            latencies = np.empty(n_single)
            for i in range(n_single):
                t0 = time.perf_counter()
                index.search(xq[i : i + 1], k)  # (1, D): one user's query
                latencies[i] = time.perf_counter() - t0

            start = time.perf_counter()
            _, found = index.search(xq, k)  # (Q, k)
            batch_seconds = time.perf_counter() - start
            hits = sum(len(set(f[f >= 0].tolist()) & set(e.tolist())) for f, e in zip(found, exact, strict=True))

            result = SearchBench(
                factory=factory,
                spec=spec,
                n=n,
                dim=dim,
                nprobe=_nprobe_of(index),
                train_vectors=trained_on,
                build_seconds=build_seconds,
                single_queries=n_single,
                p50_ms=float(1000 * np.percentile(latencies, 50)) if n_single else float("nan"),
                p95_ms=float(1000 * np.percentile(latencies, 95)) if n_single else float("nan"),
                batch_queries=queries,
                batch_queries_per_second=queries / batch_seconds,
                recall=hits / (queries * min(k, n)),
                k=k,
                index_mb=faiss.serialize_index(index).nbytes / 1e6,
            )
            del index
            run.results.append(result)
            if on_result is not None:
                on_result(result)
        del xb
    return run


def _nlist(spec: str) -> int:
    m = re.search(r"IVF(\d+)", spec)
    return int(m.group(1)) if m else 0


# ----------------------------------------------------------------------------------------------
# Command line


def _console() -> Console:
    """Rich console; 160 columns when not a terminal, so tables piped to a file are not cut."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def _write_json(path: Path, data: Any) -> None:
    from viewfinder.pipeline.fsutil import atomic_write_json

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
    from viewfinder.adapters.open_clip_encoder import ModelLoadError
    from viewfinder.pipeline.config import ConfigError

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

    from viewfinder.pipeline.faiss_index import IndexBuildError

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
