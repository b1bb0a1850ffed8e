"""FAISS index construction from a factory string, with stable int64 ids, and what searching it needs:
search parameters, nprobe tuned to a target recall, and exact re-scoring of a shortlist.

Ids: an IVF index (also under a pre-transform such as OPQ) stores the item ids in its inverted lists;
every other index is wrapped in an ``IndexIDMap2``. A spec ending in ``,Rfp16`` (the project's token,
not FAISS's) re-scores each query's shortlist exactly from the store's fp16 vector file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from ...errors import Error

PRESETS = ("Flat", "IVF", "IVFPQ", "IVFPQR", "PQ", "HNSW")
"""The factory names :func:`resolve_factory` sizes itself; anything else goes to FAISS as written."""
TRAIN_PER_LIST = 64
"""IVF lists are trained on at most this many sampled vectors per list."""

_IVF = re.compile(r"IVF(\d+)")
REFINE = "Rfp16"
"""Last component of a spec whose shortlist is re-scored from the fp16 vectors on disk."""
REFINE_FACTOR = 32
"""A refined search asks FAISS for this many times k candidates, then keeps the k best exact scores
(the tuned factor, one of :data:`REFINE_FACTORS`, where the index recorded one)."""
REFINE_FACTORS = (32, 64, 128, 256)
RESCORE_COST = 64
"""What re-scoring one candidate costs, in PQ codes scanned (the tuner's cost model: it picks the
nprobe and shortlist that reach the target recall at the least estimated work)."""
"""Shortlist factors :func:`tune_nprobe_on` tries, smallest first, for an index that re-scores."""


class IndexBuildError(Error, ValueError):
    """The FAISS index cannot be built as configured; the message says what to change."""


def _pq_m(dim: int) -> int:
    for m in (dim // 8, dim // 4, dim // 2, dim):
        if m >= 1 and dim % m == 0:
            return m
    return dim


def resolve_factory(factory: str, dim: int, n_vectors: int) -> str:
    """Turn a preset (``Flat``, ``IVF``, ``IVFPQ``, ``IVFPQR``, ``PQ``, ``HNSW``) into a FAISS factory string.

    ``IVF``/``IVFPQ``/``IVFPQR`` pick the number of lists from the collection size (about 4·sqrt(n),
    with at least 39 training points per list). ``IVFPQR`` is ``IVFPQ`` (dim/8 bytes of codes per
    vector) whose shortlist is re-scored exactly from the fp16 vectors on disk; name an OPQ rotation
    in front (``OPQ64,IVF4000,PQ64x8,Rfp16``) to train one (slower to build; measured beside it by
    ``viewfinder bench search``). Anything else is
    passed to FAISS as written (end it with ``,Rfp16`` to re-score it the same way).
    """
    if factory == "Flat":
        return "Flat"
    if factory in ("IVF", "IVFPQ", "IVFPQR"):
        nlist = max(1, min(int(4 * math.sqrt(max(n_vectors, 1))), n_vectors // 39))
        if factory == "IVF":
            return f"IVF{nlist},Flat"
        m = _pq_m(dim)
        return f"IVF{nlist},PQ{m}x8" + ("" if factory == "IVFPQ" else f",{REFINE}")
    if factory == "PQ":
        return f"PQ{_pq_m(dim)}x8"
    if factory == "HNSW":
        return "HNSW32,Flat"
    return factory


def ivf_lists(spec: str) -> int:
    """Number of IVF lists in a FAISS factory string (``IVF51,Flat`` -> 51; 0 when it has none)."""
    m = _IVF.search(spec)
    return int(m.group(1)) if m else 0


def training_vectors(spec: str, n_vectors: int) -> int:
    """How many of ``n_vectors`` :func:`build_index` trains ``spec`` on: a sample of
    :data:`TRAIN_PER_LIST` per IVF list at most, all of them for other trained indexes (PQ)."""
    nlist = ivf_lists(spec)
    return min(n_vectors, TRAIN_PER_LIST * nlist) if nlist else n_vectors


def inner_index(index: faiss.Index) -> faiss.Index:
    """The index that does the searching: inside an ``IndexIDMap``/``IndexIDMap2`` wrapper or a
    pre-transform (OPQ), downcast to its own type (the index itself when it wraps nothing)."""
    return faiss.downcast_index(index.index) if hasattr(index, "index") else faiss.downcast_index(index)


def min_training_vectors(spec: str) -> int:
    """Fewest vectors FAISS needs to train ``spec`` (0 for indexes that need no training)."""
    spec = split_refine(spec)[0]
    need = ivf_lists(spec)
    if re.search(r"PQ\d+(x8)?(?!\d)", spec) or "PQ" in spec:
        bits = re.search(r"PQ\d+x(\d+)", spec)
        need = max(need, 2 ** int(bits.group(1)) if bits else 256)
    return need


def check_trainable(spec: str, n_vectors: int) -> None:
    need = min_training_vectors(spec)
    if n_vectors < need:
        raise IndexBuildError(
            f"FAISS index {spec!r} needs at least {need} vectors to train, the collection will have "
            f"{n_vectors}: use factory 'Flat' (exact) or the 'IVF' preset, which sizes itself"
        )


def split_refine(spec: str) -> tuple[str, bool]:
    """(the FAISS part of ``spec``, whether its shortlist is re-scored from the fp16 vectors)."""
    parts = spec.split(",")
    if parts[-1] == REFINE:
        return ",".join(parts[:-1]), True
    return spec, False


def holds_ids(index: faiss.Index) -> bool:
    """True when ``index`` keeps item ids itself (an IVF index, bare or under a pre-transform)."""
    return faiss.try_extract_index_ivf(index) is not None


def index_ids(index: faiss.Index) -> np.ndarray:
    """The int64 item ids an index built by :func:`build_index` holds (any order)."""
    if hasattr(index, "id_map"):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    out = [
        faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(ivf.nlist) if lists.list_size(i)
    ]
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


def build_index(spec: str, vectors: np.ndarray, ids: np.ndarray) -> faiss.Index:
    """Build and fill an inner-product index: (N, D) float32 vectors with (N,) int64 ids."""
    dim = vectors.shape[1]
    spec = split_refine(spec)[0]
    check_trainable(spec, len(vectors))
    try:
        inner = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise IndexBuildError(f"FAISS cannot build {spec!r}: {exc}") from exc
    for part in (inner, faiss.try_extract_index_ivf(inner)):
        if part is not None and hasattr(faiss.downcast_index(part), "do_polysemous_training"):
            # Polysemous codes serve Hamming pre-filtering, which no search here uses; training them
            # made a 20k-vector IVF-PQ take 52 s instead of 3 s.
            faiss.downcast_index(part).do_polysemous_training = False
    index = inner if holds_ids(inner) else faiss.IndexIDMap2(inner)
    if not index.is_trained:
        train = vectors
        if (n_train := training_vectors(spec, len(vectors))) < len(vectors):
            # k-means on a seeded sample: FAISS advises 30-256 points per list; more only costs time.
            pick = np.random.default_rng(0).choice(len(vectors), n_train, replace=False)
            train = vectors[np.sort(pick)]
        index.train(np.ascontiguousarray(train, dtype=np.float32))
    if len(vectors):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
    return index


def supports_removal(index: faiss.Index) -> bool:
    """Whether ids can be removed from ``index`` (HNSW graphs cannot drop vectors)."""
    return not isinstance(inner_index(index), faiss.IndexHNSW)


def set_search_params(index: faiss.Index, nprobe: int, ef_search: int) -> None:
    """Set the IVF lists visited (``nprobe``) or the HNSW search breadth (``efSearch``), where they apply."""
    inner = inner_index(index)
    if hasattr(inner, "nprobe"):
        inner.nprobe = nprobe
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = ef_search


def same_family(old_spec: str, new_spec: str) -> bool:
    """True when ``new_spec`` is ``old_spec`` with a list count within a factor of 2 (no retrain needed)."""
    old_lists, new_lists = ivf_lists(old_spec), ivf_lists(new_spec)
    if not old_lists or not new_lists:
        return old_spec == new_spec
    if _IVF.sub("IVF", old_spec) != _IVF.sub("IVF", new_spec):
        return False
    return 0.5 <= new_lists / old_lists <= 2.0


def match_parallelism(index: faiss.Index, n_queries: int) -> None:
    """An IVF index searches a batch with one thread per query (FAISS's default), but a single query
    with its lists spread over the threads: otherwise one user's query runs on one core."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.parallel_mode = 1 if n_queries == 1 else 0


def refined_search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    lookup: Callable[[np.ndarray], np.ndarray],
    factor: int = REFINE_FACTOR,
) -> tuple[np.ndarray, np.ndarray]:
    """Search ``index`` for ``factor * k`` candidates per query, re-score them exactly with the vectors
    ``lookup`` gives ((n,) ids -> (n, D) float vectors) and keep the best ``k``: (scores (Q, k), ids (Q, k)),
    -1 / -inf where fewer than k items."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    match_parallelism(index, len(q))
    _, cand = index.search(q, max(k, factor * k))  # (Q, k')
    scores = np.full((len(q), k), -np.inf, dtype=np.float32)
    ids = np.full((len(q), k), -1, dtype=np.int64)
    for row, (query, found) in enumerate(zip(q, cand, strict=True)):
        found = found[found >= 0]
        if not len(found):
            continue
        exact = lookup(found).astype(np.float32) @ query  # (k',)
        best = np.argsort(-exact, kind="stable")[:k]
        scores[row, : len(best)], ids[row, : len(best)] = exact[best], found[best]
    return scores, ids


@dataclass
class Tuning:
    """nprobe chosen for an IVF index: the smallest whose recall@k on sampled queries reaches the target."""

    nprobe: int
    recall: float
    """recall@k at that nprobe against exact search (leave-one-out: each query's own item is left out)."""
    recall_low: float
    """One-sided 95% lower bound of ``recall`` (mean - 1.645 standard errors over the queries): what
    must reach the target, so that the sample's luck does not pick the nprobe."""
    target: float
    queries: int
    k: int
    refine_factor: int = 0
    """Shortlist factor a re-scoring index searches with (0: it does not re-score)."""


def tune_nprobe(
    index: faiss.Index,
    vectors: np.ndarray,
    ids: np.ndarray,
    *,
    target: float,
    k: int = 10,
    queries: int = 1000,
    lookup: Callable[[np.ndarray], np.ndarray] | None = None,
    seed: int = 0,
) -> Tuning | None:
    """The smallest nprobe (1, 2, 3, 5, 8, … steps of 1.5x up to nlist) at which ``index`` finds
    ``target`` of the exact top ``k`` of a seeded sample of its own vectors used as queries (each
    query's own item excluded), searched with re-scoring through ``lookup`` when given.
    ``vectors``/``ids`` are everything the index holds. None for an index without lists. Leaves the
    index's nprobe at the chosen value."""
    if faiss.try_extract_index_ivf(index) is None or len(vectors) <= k + 1:
        return None
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(vectors), min(queries, len(vectors)), replace=False))
    q = np.ascontiguousarray(vectors[pick], dtype=np.float32)
    _, truth_pos = faiss.knn(q, np.ascontiguousarray(vectors, dtype=np.float32), k + 1, faiss.METRIC_INNER_PRODUCT)
    truth = [ids[row[row != own]][:k] for row, own in zip(truth_pos, pick, strict=True)]
    return tune_nprobe_on(index, q, truth, target=target, k=k, lookup=lookup, exclude=ids[pick])


def tune_nprobe_on(
    index: faiss.Index,
    queries: np.ndarray,
    truth: list[np.ndarray] | np.ndarray,
    *,
    target: float,
    k: int = 10,
    lookup: Callable[[np.ndarray], np.ndarray] | None = None,
    exclude: np.ndarray | None = None,
) -> Tuning | None:
    """The smallest nprobe (steps of 1.5x up to nlist) at which ``index`` finds ``target`` of ``truth`` (each
    query's exact top-k ids) for ``queries``, judged by the recall's 95% lower bound; ``exclude`` is an
    id per query left out of its results (the query's own item). Leaves the index's nprobe at the
    chosen value."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return None
    q = np.ascontiguousarray(queries, dtype=np.float32)
    wanted = [set(np.asarray(t).tolist()) for t in truth]
    extra = 0 if exclude is None else 1

    def measure(nprobe: int, factor: int) -> tuple[float, float]:
        ivf.nprobe = nprobe
        if lookup is not None:
            _, found = refined_search(index, q, k + extra, lookup, factor)
        else:
            _, found = index.search(q, k + extra)
        per_query = np.zeros(len(q))
        for row, (t, f) in enumerate(zip(wanted, found, strict=True)):
            if exclude is not None:
                f = f[f != exclude[row]]
            per_query[row] = len(t & set(f[:k].tolist())) / max(1, len(t))
        recall = float(per_query.mean())
        return recall, recall - 1.645 * float(per_query.std(ddof=1)) / np.sqrt(len(q)) if len(q) > 1 else recall

    def cost(t: Tuning) -> float:
        # Codes scanned, plus the re-scored candidates at about RESCORE_COST scans each (a gather from
        # the memory-mapped vectors and a D-dimensional dot product).
        return t.nprobe * ivf.ntotal / max(1, ivf.nlist) + RESCORE_COST * t.refine_factor * k

    best: Tuning | None = None
    for factor in REFINE_FACTORS if lookup is not None else (0,):
        # A longer shortlist only helps if it reaches the target with fewer lists than the best so far.
        limit = best.nprobe - 1 if best is not None and best.recall_low >= target else ivf.nlist
        if limit < 1 or (best is not None and best.recall_low >= target and RESCORE_COST * factor * k >= cost(best)):
            break  # the longer shortlist alone would cost more than the best found
        nprobe = 1
        while True:
            recall, low = measure(nprobe, factor)
            if low >= target or nprobe >= limit:
                break
            nprobe = min(limit, max(nprobe + 1, math.ceil(nprobe * 1.5)))
        found = Tuning(nprobe, recall, low, target, len(q), k, factor)
        reaches, best_reaches = found.recall_low >= target, best is not None and best.recall_low >= target
        if best is None or (reaches and (not best_reaches or cost(found) < cost(best))):
            best = found
        elif not reaches and not best_reaches and found.recall > best.recall:
            best = found
    assert best is not None
    ivf.nprobe = best.nprobe
    return best
