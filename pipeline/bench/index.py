"""Indexing throughput: the real :class:`~viewfinder.pipeline.store.indexer.Indexer` over generated
JPEGs against the encoder's forward pass alone on ready tensors, so the ratio says how much the
pipeline around the model (decode, preprocess, store) costs. Prints figures; not a test."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data import load_average as machine_load
from .data import make_bench_images

if TYPE_CHECKING:
    from ...adapters.base import ImageTextEncoder

logger = logging.getLogger(__name__)


@dataclass
class IndexBench:
    """Figures of one indexing benchmark: the full pipeline against the encoder's forward pass alone."""

    model: str
    images: int
    batch_size: int
    workers: int
    """DataLoader decoding worker processes used by the indexer."""
    torch_threads: int
    """torch intra-op threads the encoder's forward passes ran with (an entry's own `threads`, else the run's)."""
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

    from ...adapters.registry import load_encoder
    from ..config import IndexConfig
    from ..store.images import decode_image
    from ..store.indexer import Indexer

    if n < 1 or batch_size < 1 or repeats < 1:
        raise ValueError("n, batch_size and repeats must be >= 1")
    config = IndexConfig(factory="Flat", batch_size=batch_size)
    if workers is not None:
        config = replace(config, num_workers=workers)  # validated again
    load_average = machine_load()
    previous_threads = torch.get_num_threads()
    try:
        encoder = load_encoder(model) if isinstance(model, str) else model
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
        # An entry's own `threads` applies around the encoder's forward passes, over the run's setting.
        torch_threads = getattr(encoder, "threads", None) or torch.get_num_threads()
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


@dataclass
class IndexComparison:
    """Several encoders indexing the same JPEGs in one run, their rounds interleaved (A, B, A, B, ...) so a
    change in the machine's load falls on every model alike; each model's best round counts."""

    models: list[str]
    rounds: int
    results: dict[str, IndexBench]
    """Model -> its best round (highest full-pipeline rate)."""
    full_vs_first: dict[str, float]
    """Model -> its full-pipeline images/s over the first model's."""
    forward_vs_first: dict[str, float]
    """Model -> its forward-pass images/s over the first model's."""


def compare_index(
    models: list[str | ImageTextEncoder],
    rounds: int = 2,
    **kwargs: Any,
) -> IndexComparison:
    """:func:`bench_index` for each of ``models`` in turn, ``rounds`` times, interleaved; ``kwargs`` go to
    every call (n, batch_size, workers, image_size, threads, seed). The first model is the reference."""
    if len(models) < 1 or rounds < 1:
        raise ValueError("compare_index: give at least one model and one round")
    runs: dict[str, list[IndexBench]] = {}
    for _ in range(rounds):
        for model in models:
            result = bench_index(model, repeats=1, **kwargs)
            runs.setdefault(result.model, []).append(result)
    best = {name: max(rs, key=lambda r: r.full_images_per_second) for name, rs in runs.items()}
    names = list(best)
    first = best[names[0]]
    return IndexComparison(
        models=names,
        rounds=rounds,
        results=best,
        full_vs_first={n: r.full_images_per_second / first.full_images_per_second for n, r in best.items()},
        forward_vs_first={n: r.forward_images_per_second / first.forward_images_per_second for n, r in best.items()},
    )
