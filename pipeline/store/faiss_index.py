"""FAISS index construction from a factory string, with stable int64 ids (``IndexIDMap2``)."""

from __future__ import annotations

import math
import re

import faiss
import numpy as np

from ...errors import Error

PRESETS = ("Flat", "IVF", "IVFPQ", "PQ", "HNSW")
"""The factory names :func:`resolve_factory` sizes itself; anything else goes to FAISS as written."""
TRAIN_PER_LIST = 64
"""IVF lists are trained on at most this many sampled vectors per list."""

_IVF = re.compile(r"IVF(\d+)")


class IndexBuildError(Error, ValueError):
    """The FAISS index cannot be built as configured; the message says what to change."""


def _pq_m(dim: int) -> int:
    for m in (dim // 8, dim // 4, dim // 2, dim):
        if m >= 1 and dim % m == 0:
            return m
    return dim


def resolve_factory(factory: str, dim: int, n_vectors: int) -> str:
    """Turn a preset (``Flat``, ``IVF``, ``IVFPQ``, ``PQ``, ``HNSW``) into a FAISS factory string.

    ``IVF``/``IVFPQ`` pick the number of lists from the collection size (about 4·sqrt(n), with at
    least 39 training points per list). Anything else is passed to FAISS as written.
    """
    if factory == "Flat":
        return "Flat"
    if factory in ("IVF", "IVFPQ"):
        nlist = max(1, min(int(4 * math.sqrt(max(n_vectors, 1))), n_vectors // 39))
        return f"IVF{nlist},Flat" if factory == "IVF" else f"IVF{nlist},PQ{_pq_m(dim)}x8"
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
    """The index inside an ``IndexIDMap``/``IndexIDMap2`` wrapper, downcast to its own type (the index itself
    when it wraps nothing)."""
    return faiss.downcast_index(index.index) if hasattr(index, "index") else index


def min_training_vectors(spec: str) -> int:
    """Fewest vectors FAISS needs to train ``spec`` (0 for indexes that need no training)."""
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


def build_index(spec: str, vectors: np.ndarray, ids: np.ndarray) -> faiss.Index:
    """Build and fill an inner-product index: (N, D) float32 vectors with (N,) int64 ids."""
    dim = vectors.shape[1]
    check_trainable(spec, len(vectors))
    try:
        inner = faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise IndexBuildError(f"FAISS cannot build {spec!r}: {exc}") from exc
    index = faiss.IndexIDMap2(inner)
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
