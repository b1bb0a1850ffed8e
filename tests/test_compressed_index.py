"""Compressed indexes: IVF-PQ codes whose shortlist is re-scored exactly from fp16 vectors on disk
(``IVFPQR`` / ``,Rfp16``), and nprobe tuned to a target recall when an IVF index is built, recorded in
the index and used by searches that do not set their own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import faiss_ids, synthetic_store

from viewfinder.pipeline.store.faiss_index import REFINE, index_ids, resolve_factory, split_refine, tune_nprobe
from viewfinder.pipeline.store.index_store import IndexStore
from viewfinder.pipeline.store.records import FaissFileMissingError


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, dim))
    x = centres[rng.integers(0, 64, n)] + 0.5 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def commit(path: Path, vectors: np.ndarray, factory: str, *, target: float, delete: list[str] = ()) -> IndexStore:
    return synthetic_store(path, vectors, factory, target_recall=target, delete=delete)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def test_the_ivfpqr_preset_is_ivf_pq_with_refine():
    spec = resolve_factory("IVFPQR", 512, 1_000_000)
    assert spec == "IVF4000,PQ64x8," + REFINE and split_refine(spec) == ("IVF4000,PQ64x8", True)
    assert split_refine("IVF4000,PQ64x8") == ("IVF4000,PQ64x8", False)


def test_refined_pq_search_ranks_by_exact_scores_and_keeps_ids_in_the_lists(tmp_path):
    data = clustered(4300, 32, seed=0)
    base, queries = data[:4000], data[4000:]
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :10]
    store = commit(tmp_path / "pqr", base, "IVFPQR", target=0.95)
    m = store.manifest
    assert split_refine(m.faiss_spec)[1] and m.nprobe >= 1 and m.tuning["recall_low"] >= 0.95
    assert sorted(p.name for p in (tmp_path / "pqr").glob("vectors.*.npy")) == [
        f"vectors.{m.generation}.f16.npy",
        f"vectors.{m.generation}.ids.npy",
    ]
    store.configure_search(0, 64)  # 0: the tuned nprobe
    scores, ids = store.search_vectors(queries, 10)
    assert recall(ids, truth) >= 0.9  # held-out queries, tuned on the index's own vectors
    exact = np.einsum("qd,qkd->qk", queries, base[ids].astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(scores, exact, atol=1e-5)  # the scores are the re-scored ones, in order
    assert (np.diff(scores, axis=1) <= 1e-7).all()
    assert not hasattr(store.index, "id_map") and sorted(index_ids(store.index)) == list(range(4000))

    plain = commit(tmp_path / "pq", base, "IVFPQ", target=0.0)
    plain.configure_search(m.nprobe, 64)
    _, pq_ids = plain.search_vectors(queries, 10)
    assert recall(ids, truth) > recall(pq_ids, truth) + 0.1  # what re-scoring buys over the codes alone
    faiss_file = tmp_path / "pqr" / f"index.{m.generation}.faiss"
    assert faiss_file.stat().st_size < base.nbytes / 4  # 4 bytes of codes per 32-d vector, plus ids and lists


def test_an_incremental_commit_rewrites_the_refine_files_and_drops_removed_items(tmp_path):
    first = clustered(3000, 32, seed=1)
    store = commit(tmp_path / "i", first, "IVFPQR", target=0.9)
    gen = store.manifest.generation
    store.close()
    store = commit(tmp_path / "i", clustered(200, 32, seed=2), "IVFPQR", target=0.9, delete=["v0", "v1", "v2"])
    m = store.manifest
    assert m.generation == gen + 1 and m.count == 3197
    assert not (tmp_path / "i" / f"vectors.{gen}.ids.npy").exists()
    ids_on_disk = np.load(tmp_path / "i" / f"vectors.{m.generation}.ids.npy")
    assert (np.diff(ids_on_disk) > 0).all() and len(ids_on_disk) == 3197 and 0 not in ids_on_disk
    assert sorted(faiss_ids(store.index).tolist()) == ids_on_disk.tolist()
    store.configure_search(0, 64)
    _, found = store.search_vectors(first[:3], 5)
    assert not {0, 1, 2} & set(found.ravel().tolist())  # removed items are never returned


def test_nprobe_is_the_smallest_reaching_the_target_and_a_search_setting_overrides_it(tmp_path):
    base = clustered(4000, 32, seed=3)
    loose = commit(tmp_path / "loose", base, "IVF", target=0.5).manifest
    strict = commit(tmp_path / "strict", base, "IVF", target=0.999).manifest
    assert loose.nprobe < strict.nprobe and loose.tuning["target"] == 0.5
    store = IndexStore.open(tmp_path / "strict")
    index = store.index
    store.configure_search(0, 64)
    assert index.nprobe == strict.nprobe
    store.configure_search(3, 64)
    assert index.nprobe == 3
    flat = commit(tmp_path / "flat", base, "Flat", target=0.99).manifest
    assert flat.nprobe == 0 and flat.tuning == {}


def test_tune_nprobe_reports_what_it_measured():
    import faiss

    base = clustered(2000, 16, seed=4)
    index = faiss.index_factory(16, "IVF32,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(base)
    index.add_with_ids(base, np.arange(2000, dtype=np.int64))
    tuning = tune_nprobe(index, base, np.arange(2000), target=0.95, queries=100)
    assert tuning is not None and tuning.recall >= tuning.recall_low >= 0.95 and tuning.queries == 100
    stricter = tune_nprobe(index, base, np.arange(2000), target=0.999, queries=100)
    assert stricter is not None and stricter.nprobe >= tuning.nprobe and index.nprobe == stricter.nprobe
    flat = faiss.IndexFlatIP(16)
    assert tune_nprobe(flat, base, np.arange(2000), target=0.9) is None


def test_a_missing_refine_file_says_what_to_do(tmp_path):
    store = commit(tmp_path / "m", clustered(3000, 32, seed=5), "IVFPQR", target=0.0)
    m = store.manifest
    store.close()
    (tmp_path / "m" / f"vectors.{m.generation}.f16.npy").unlink()
    with pytest.raises(FaissFileMissingError, match="repair the index"):
        IndexStore.open(tmp_path / "m").search_vectors(clustered(2, 32, seed=6), 5)
