"""FAISS index construction from a factory string, with stable int64 ids (``IndexIDMap2``)."""

from __future__ import annotations

import math
import re

import faiss
import numpy as np

PRESETS = ("Flat", "IVF", "IVFPQ", "PQ", "HNSW")
TRAIN_PER_LIST = 64
"""IVF lists are trained on at most this many sampled vectors per list."""


class IndexBuildError(ValueError):
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


def min_training_vectors(spec: str) -> int:
    """Fewest vectors FAISS needs to train ``spec`` (0 for indexes that need no training)."""
    need = 0
    if m := re.search(r"IVF(\d+)", spec):
        need = max(need, int(m.group(1)))
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
        if (m := re.search(r"IVF(\d+)", spec)) and len(vectors) > TRAIN_PER_LIST * int(m.group(1)):
            # k-means on a seeded sample: FAISS advises 30-256 points per list; more only costs time.
            pick = np.random.default_rng(0).choice(len(vectors), TRAIN_PER_LIST * int(m.group(1)), replace=False)
            train = vectors[np.sort(pick)]
        index.train(np.ascontiguousarray(train, dtype=np.float32))
    if len(vectors):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
    return index


def supports_removal(index: faiss.Index) -> bool:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    return not isinstance(inner, faiss.IndexHNSW)


def set_search_params(index: faiss.Index, nprobe: int, ef_search: int) -> None:
    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    if hasattr(inner, "nprobe"):
        inner.nprobe = nprobe
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = ef_search


def same_family(old_spec: str, new_spec: str) -> bool:
    """True when ``new_spec`` is ``old_spec`` with a list count within a factor of 2 (no retrain needed)."""
    pattern = r"IVF(\d+)"
    old_m, new_m = re.search(pattern, old_spec), re.search(pattern, new_spec)
    if not old_m or not new_m:
        return old_spec == new_spec
    if re.sub(pattern, "IVF", old_spec) != re.sub(pattern, "IVF", new_spec):
        return False
    ratio = int(new_m.group(1)) / int(old_m.group(1))
    return 0.5 <= ratio <= 2.0
