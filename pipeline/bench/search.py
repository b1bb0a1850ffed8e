"""FAISS search: build time, latency, throughput, recall against exact search and size, over
seeded clustered vectors. Prints figures; not a test."""

from __future__ import annotations

import gc
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..store.faiss_index import REFINE_FACTOR, match_parallelism, refined_search, tune_nprobe
from .data import Mixture, clustered_vectors, load_average

if TYPE_CHECKING:
    import faiss

logger = logging.getLogger(__name__)


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
    ram_mb: float = 0.0
    """Resident memory the index takes once loaded from its file (RSS before and after ``read_index``):
    counts what serialising leaves out (an ``IndexIDMap2``'s reverse map)."""
    disk_mb: float = 0.0
    """On disk: the FAISS file, plus the fp16 vectors and ids a re-scoring index reads (memory-mapped)."""
    refine: bool = False
    """The shortlist (``refine_factor`` x k) is re-scored exactly from the fp16 vectors on disk."""
    refine_factor: int = 0
    """The shortlist factor tuned with nprobe (0: no re-scoring)."""
    tuned_recall: float | None = None
    """recall@k on the index's own vectors (leave-one-out) at the nprobe :func:`tune_nprobe` chose, as
    the index store tunes it; ``recall`` is then measured on the held-out queries."""


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


def _is_exhaustive(spec: str) -> bool:
    """True when a search scans every vector (Flat, PQ without lists): single queries are slow at scale."""
    return not re.search(r"IVF|HNSW|NSG|LSH", spec)


def _build(spec: str, xb: np.ndarray, train_sample: int | None, rng: np.random.Generator) -> tuple[faiss.Index, int]:
    """Build through :func:`build_index` (which trains IVF on :data:`TRAIN_PER_LIST` vectors per list);
    with ``train_sample``, hand it only that many random vectors to train on, then add the rest.
    Returns the index and the number of vectors it was trained on (0: it needs no training)."""
    from ..store.faiss_index import build_index, min_training_vectors, training_vectors

    ids = np.arange(len(xb), dtype=np.int64)
    if min_training_vectors(spec) == 0:
        return build_index(spec, xb, ids), 0
    if not train_sample or train_sample >= len(xb):
        return build_index(spec, xb, ids), training_vectors(spec, len(xb))
    picked = np.zeros(len(xb), dtype=bool)
    picked[rng.choice(len(xb), size=train_sample, replace=False)] = True
    index = build_index(spec, xb[picked], ids[picked])  # trains on (a sample of, capped at) these
    step = 131_072
    for lo in range(0, len(xb), step):
        rest = ~picked[lo : lo + step]
        if rest.any():
            index.add_with_ids(np.ascontiguousarray(xb[lo : lo + step][rest]), ids[lo : lo + step][rest])
    return index, training_vectors(spec, train_sample)


def rss_mb() -> float:
    """This process's resident memory (Linux /proc; 0.0 where it cannot be read)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


_RSS_PROBE = """
import sys, faiss
from viewfinder.pipeline.bench.search import rss_mb
before = rss_mb()
index = faiss.read_index(sys.argv[1])
print(rss_mb() - before)
"""


def _reload(index: faiss.Index, folder: Path) -> tuple[faiss.Index, float, float]:
    """Write ``index`` to ``folder``, free it and read it back as a search would: (the index, the resident
    memory loading it takes in MB, its file's size in MB). The memory is measured in a fresh process
    (RSS before and after ``read_index``), where no freed memory of this one is reused."""
    import faiss

    path = folder / "index.faiss"
    faiss.write_index(index, str(path))
    del index
    gc.collect()
    probe = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(path)], capture_output=True, text=True, check=False)
    try:
        ram = float(probe.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        logger.warning("could not measure the index's memory: %s", probe.stderr.strip()[-300:])
        ram = float("nan")
    return faiss.read_index(str(path)), ram, path.stat().st_size / 1e6


def _refine_lookup(xb: np.ndarray, folder: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The re-scoring vectors as the store keeps them: an fp16 file in id order, memory-mapped (ids
    here are positions, so no id file is needed)."""
    path = folder / "vectors.f16.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=xb.shape)
    for lo in range(0, len(xb), 262_144):
        out[lo : lo + 262_144] = xb[lo : lo + 262_144]
    out.flush()
    del out
    vectors = np.load(path, mmap_mode="r")
    return lambda found: vectors[found]


def _nprobe_of(index: faiss.Index) -> int | None:
    from ..store.faiss_index import inner_index

    inner = inner_index(index)
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
    target_recall: float | None = None,
) -> SearchBenchRun:
    """Build each factory at each size over seeded clustered unit vectors (:class:`Mixture`) and measure it.

    ``nprobe`` None: tuned as the index store tunes it (:func:`tune_nprobe` to ``target_recall``,
    default :class:`IndexConfig`'s, on a sample of the index's own vectors); recall is then measured on
    the held-out queries. A spec ending in ``,Rfp16`` is searched as the store searches it: a shortlist
    re-scored from an fp16 vector file on disk, memory-mapped. ``single_queries`` (latency) defaults to all
    ``queries``, but to at most 200 for exhaustive indexes over more than 10^8 floats (a
    one-query scan of 1M x 512 takes a large fraction of a second). ``train_sample`` is the
    number of random vectors an index is trained on (None or 0: what :func:`build_index`, and so
    the index store, uses: :data:`TRAIN_PER_LIST` per IVF list, FAISS's own guidance being 30-256;
    larger samples are capped there). ``on_result`` is called as each figure is ready.
    """
    import faiss

    from ..config import IndexConfig
    from ..store.faiss_index import resolve_factory, set_search_params, split_refine

    if dim < 1 or queries < 1 or k < 1 or not sizes or not factories:
        raise ValueError("dim, queries and k must be >= 1, with at least one size and one factory")
    defaults = IndexConfig()
    target = target_recall if target_recall is not None else defaults.target_recall
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
        load_average(),
    )

    for n in sizes:
        logger.info("generating %d x %d clustered vectors", n, dim)
        xb = clustered_vectors(n, mixture, np.random.default_rng([seed, 2, n]))  # (N, D)
        start = time.perf_counter()
        _, exact = faiss.knn(xq, xb, min(k, n), metric=faiss.METRIC_INNER_PRODUCT)  # exact (Q, k), like IndexFlatIP
        logger.info("n=%d: exact search for %d queries in %.1fs", n, queries, time.perf_counter() - start)
        for factory in factories:
            spec = resolve_factory(factory, dim, n)
            logger.info("n=%d: building %s", n, spec)
            start = time.perf_counter()
            index, trained_on = _build(spec, xb, train_sample, np.random.default_rng([seed, 3, n]))
            build_seconds = time.perf_counter() - start
            refine = split_refine(spec)[1]
            work = tempfile.TemporaryDirectory(prefix="vf-bench-search-")
            folder = Path(work.name)
            lookup = _refine_lookup(xb, folder) if refine else None
            tuned = None
            if nprobe is None:
                tuned = tune_nprobe(index, xb, np.arange(n, dtype=np.int64), target=target, k=k, lookup=lookup)
            set_search_params(index, nprobe or (tuned.nprobe if tuned else 16), defaults.ef_search)
            index, ram_mb, file_mb = _reload(index, folder)

            factor = tuned.refine_factor if tuned and tuned.refine_factor else REFINE_FACTOR

            def search(
                q: np.ndarray, kk: int, index: faiss.Index = index, lookup: Any = lookup, factor: int = factor
            ) -> np.ndarray:
                if lookup is None:
                    match_parallelism(index, len(q))  # as the index store searches
                    return index.search(q, kk)[1]
                return refined_search(index, q, kk, lookup, factor)[1]

            n_single = single_queries if single_queries is not None else queries
            if single_queries is None and _is_exhaustive(spec) and n * dim > 100_000_000:
                n_single = min(queries, 200)
            n_single = min(n_single, queries)
            latencies = np.empty(n_single)
            for i in range(n_single):
                t0 = time.perf_counter()
                search(xq[i : i + 1], k)  # (1, D): one user's query
                latencies[i] = time.perf_counter() - t0

            start = time.perf_counter()
            found = search(xq, k)  # (Q, k)
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
                index_mb=file_mb,
                ram_mb=ram_mb,
                disk_mb=sum(f.stat().st_size for f in folder.iterdir()) / 1e6,
                refine=refine,
                refine_factor=factor if refine else 0,
                tuned_recall=tuned.recall if tuned else None,
            )
            del index, search, lookup
            work.cleanup()
            run.results.append(result)
            if on_result is not None:
                on_result(result)
        del xb
    return run
