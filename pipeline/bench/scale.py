"""A collection larger than memory, simulated: an IVF-PQ index with exact re-scoring built over n
seeded clustered vectors made and added in chunks (never all in RAM), the fp16 vectors written to a
memory-mapped file as the index store keeps them. Figures: build time, peak RSS, the index's own RAM,
disk, p50/p95 latency and recall@k against exact search on a query sample. Prints figures; not a test."""

from __future__ import annotations

import logging
import math
import resource
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..progress import progress_bar
from ..store.faiss_index import TRAIN_PER_LIST, refined_search, split_refine, tune_nprobe_on
from .data import Mixture, clustered_vectors, load_average
from .search import _reload, rss_mb

logger = logging.getLogger(__name__)


@dataclass
class ScaleBench:
    """Figures of one simulated large collection."""

    n: int
    dim: int
    spec: str
    chunk: int
    """Vectors made and added per step."""
    train_vectors: int
    train_seconds: float
    add_seconds: float
    """Making, encoding and adding every vector, and writing its fp16 copy."""
    build_seconds: float
    peak_rss_mb: float
    """The process's peak resident memory over the whole run (training included), file pages it mapped
    (the fp16 vectors it read back) counted."""
    peak_anon_mb: float
    """The peak of the memory the process allocated itself (RssAnon, sampled every 0.2 s): what
    "never all in RAM" is about."""
    index_ram_mb: float
    """Resident memory the index takes once loaded, measured in a fresh process."""
    index_file_mb: float
    vectors_file_mb: float
    """The fp16 vectors (and 8-byte ids) re-scoring reads, memory-mapped, not resident."""
    nprobe: int
    tuned_recall: float
    """recall@k at ``nprobe`` of 1,000 tuning queries (drawn apart from the measured ones) against exact search."""
    queries: int
    single_queries: int
    p50_ms: float
    p95_ms: float
    recall: float
    """recall@k of the held-out queries against exact search over every vector (streamed in chunks)."""
    k: int
    refine_factor: int
    faiss_threads: int
    load_average: float

    @property
    def ram_bytes_per_item(self) -> float:
        return self.index_ram_mb * 1e6 / self.n

    @property
    def disk_bytes_per_item(self) -> float:
        return (self.index_file_mb + self.vectors_file_mb) * 1e6 / self.n


def bench_scale(
    n: int = 10_000_000,
    dim: int = 512,
    *,
    nlist: int | None = None,
    chunk: int = 250_000,
    queries: int = 200,
    single_queries: int = 200,
    k: int = 10,
    target_recall: float = 0.99,
    seed: int = 0,
    work_dir: Path | None = None,
    progress: bool | None = None,
) -> ScaleBench:
    """Build ``IVF{nlist}_HNSW32,PQ{dim/8}x8`` with re-scoring over ``n`` vectors and measure it.

    ``nlist`` defaults to 4·sqrt(n) rounded to a power of two, capped at 16,384 (the coarse quantizer is
    an HNSW graph over the list centres, so assigning 10M vectors does not scan every centre).
    The vectors are drawn from :class:`Mixture` (the ``bench search`` data) in ``chunk`` s.
    """
    import faiss

    if n < 1000 or dim < 8 or dim % 8 or chunk < 1:
        raise ValueError("n must be >= 1000, dim a multiple of 8, chunk >= 1")
    nlist = nlist or min(16_384, 2 ** round(math.log2(4 * math.sqrt(n))))
    spec = f"IVF{nlist}_HNSW32,PQ{dim // 8}x8,Rfp16"
    mixture = Mixture.random(dim, 1000, 64, seed)
    folder = Path(tempfile.mkdtemp(prefix="vf-bench-scale-", dir=work_dir))
    peak = PeakAnon()
    try:
        start = time.perf_counter()
        n_train = min(n, TRAIN_PER_LIST * nlist)
        train = clustered_vectors(n_train, mixture, np.random.default_rng([seed, 10]))  # (T, D)
        index = faiss.index_factory(dim, split_refine(spec)[0], faiss.METRIC_INNER_PRODUCT)
        faiss.downcast_index(faiss.extract_index_ivf(index)).do_polysemous_training = False
        logger.info("training %s on %d vectors", spec, n_train)
        index.train(train)
        train_seconds = time.perf_counter() - start

        vectors_path = folder / "vectors.f16.npy"
        on_disk = np.lib.format.open_memmap(vectors_path, mode="w+", dtype=np.float16, shape=(n, dim))
        start = time.perf_counter()
        with progress_bar(f"adding {n:,} vectors", n, "vec", progress) as bar:
            for lo in range(0, n, chunk):
                hi = min(n, lo + chunk)
                block = clustered_vectors(hi - lo, mixture, np.random.default_rng([seed, 11, lo]))  # (b, D)
                index.add_with_ids(block, np.arange(lo, hi, dtype=np.int64))
                on_disk[lo:hi] = block
                bar.advance(hi - lo)
        on_disk.flush()
        del on_disk
        add_seconds = time.perf_counter() - start
        vectors = np.load(vectors_path, mmap_mode="r")

        def lookup(found: np.ndarray) -> np.ndarray:
            return vectors[found]

        del train
        # Tuning queries drawn apart from the measured ones; their exact top k streamed over every vector.
        tune_q = clustered_vectors(1000, mixture, np.random.default_rng([seed, 13]))
        tuned = tune_nprobe_on(
            index, tune_q, _exact_top_k(tune_q, vectors, k, chunk), target=target_recall, k=k, lookup=lookup
        )
        assert tuned is not None
        faiss.extract_index_ivf(index).nprobe = tuned.nprobe
        index, index_ram, index_file = _reload(index, folder)
        faiss.extract_index_ivf(index).nprobe = tuned.nprobe
        factor = tuned.refine_factor

        xq = clustered_vectors(queries, mixture, np.random.default_rng([seed, 12]))  # (Q, D), held out
        latencies = np.empty(min(single_queries, queries))
        for i in range(len(latencies)):
            t0 = time.perf_counter()
            refined_search(index, xq[i : i + 1], k, lookup, factor)
            latencies[i] = time.perf_counter() - t0
        _, found = refined_search(index, xq, k, lookup, factor)
        truth = _exact_top_k(xq, vectors, k, chunk)
        hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
        return ScaleBench(
            n=n,
            dim=dim,
            spec=spec,
            chunk=chunk,
            train_vectors=n_train,
            train_seconds=train_seconds,
            add_seconds=add_seconds,
            build_seconds=train_seconds + add_seconds,
            peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
            peak_anon_mb=peak.stop(),
            index_ram_mb=index_ram,
            index_file_mb=index_file,
            vectors_file_mb=(vectors_path.stat().st_size + 8 * n) / 1e6,  # + the store's 8-byte id per item
            nprobe=tuned.nprobe,
            tuned_recall=tuned.recall,
            queries=queries,
            single_queries=len(latencies),
            p50_ms=float(1000 * np.percentile(latencies, 50)),
            p95_ms=float(1000 * np.percentile(latencies, 95)),
            recall=hits / (queries * k),
            k=k,
            refine_factor=factor,
            faiss_threads=faiss.omp_get_max_threads(),
            load_average=load_average(),
        )
    finally:
        peak.stop()
        shutil.rmtree(folder, ignore_errors=True)
        logger.info(
            "peak RSS %.0f MB (now %.0f MB)", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, rss_mb()
        )


def anon_mb() -> float:
    """This process's anonymous resident memory (RssAnon in /proc/self/status; 0.0 where unreadable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1e3
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


class PeakAnon:
    """Samples :func:`anon_mb` in a thread until stopped; :meth:`stop` returns the peak."""

    def __init__(self, every: float = 0.2) -> None:
        self.peak = anon_mb()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._done.wait(every):
            self.peak = max(self.peak, anon_mb())

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return max(self.peak, anon_mb())


def _exact_top_k(queries: np.ndarray, vectors: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """(Q, k) ids of the exact inner-product top k over ``vectors`` (memory-mapped fp16), a chunk at a time."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), k), dtype=np.int64)
    for lo in range(0, len(vectors), chunk):
        block = np.asarray(vectors[lo : lo + chunk], dtype=np.float32)  # (b, D)
        scores = queries @ block.T  # (Q, b)
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        cand_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        cand_ids = np.concatenate([best_ids, top + lo], axis=1)
        order = np.argsort(-cand_scores, axis=1)[:, :k]
        best_scores = np.take_along_axis(cand_scores, order, axis=1)
        best_ids = np.take_along_axis(cand_ids, order, axis=1)
    return best_ids
