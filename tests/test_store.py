"""The index store: manifest, FAISS types, approximate vs exact search, encoder checks, locking,
and crash safety (a run killed with SIGKILL leaves the last generation intact and resumes)."""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    CountingEncoder,
    check_store_invariants,
    faiss_ids,
    random_image,
    ro_connect,
    synthetic_store,
    tiny_index_config,
    write_corrupt_files,
    write_images,
)

from viewfinder.pipeline.api import open_index
from viewfinder.pipeline.stages.presets import load_preset
from viewfinder.pipeline.store.faiss_index import IndexBuildError, resolve_factory
from viewfinder.pipeline.store.index_store import (
    FORMAT_VERSION,
    EncoderMismatchError,
    IndexStore,
    Manifest,
    StoreError,
)
from viewfinder.pipeline.store.indexer import Indexer
from viewfinder.pipeline.store.search import Searcher


def index_folder(encoder, source, index_dir, *, rebuild=False, **overrides):
    return Indexer(encoder, tiny_index_config(**overrides), progress=False).run(source, index_dir, rebuild=rebuild)


# ------------------------------------------------------------------------------ manifest
def test_manifest_json_fields(tmp_path, make_images, tiny_encoder):
    make_images(6)
    report = index_folder(tiny_encoder, tmp_path / "images", tmp_path / "index")
    on_disk = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert set(on_disk) == {f.name for f in fields(Manifest)}
    assert on_disk["format_version"] == FORMAT_VERSION
    assert on_disk["encoder_name"] == "tiny-test"
    assert on_disk["encoder_fingerprint"] == tiny_encoder.fingerprint
    assert on_disk["embed_dim"] == 32
    assert on_disk["modality"] == "image"
    assert on_disk["factory"] == "Flat" and on_disk["faiss_spec"] == "Flat"
    assert on_disk["count"] == 6 == report.count
    assert on_disk["generation"] == 1
    assert on_disk["source"] == str((tmp_path / "images").resolve())
    assert on_disk["created_at"] and on_disk["updated_at"] >= on_disk["created_at"]
    # The readable mirror equals the manifest kept in SQLite.
    store = IndexStore.open(tmp_path / "index")
    assert on_disk == json.loads(json.dumps(store.manifest.__dict__))
    assert len(store) == 6
    # Only the committed generation's FAISS file and no temporary files are left.
    names = sorted(p.name for p in (tmp_path / "index").iterdir())
    assert "index.1.faiss" in names and not [n for n in names if n.endswith(".tmp")]
    assert [n for n in names if n.endswith(".faiss")] == ["index.1.faiss"]


def test_manifest_records_the_encoder_entry_so_search_needs_no_config(tmp_path, make_images, tiny_encoder):
    from viewfinder.adapters.registry import portable_entry

    make_images(4)
    entry = portable_entry(load_preset("tiny").encoder)
    Indexer(tiny_encoder, tiny_index_config(), encoder_entry=entry, progress=False).run(
        tmp_path / "images", tmp_path / "index"
    )
    assert json.loads((tmp_path / "index" / "manifest.json").read_text())["encoder_entry"] == entry
    searcher = open_index(tmp_path / "index")  # loads tiny-test from the manifest
    assert searcher.encoder.fingerprint == tiny_encoder.fingerprint
    assert searcher.search(image=tmp_path / "images" / "img0001.jpg", k=1).hits[0].key == "img0001.jpg"


def test_open_missing_index_is_a_store_error_with_the_fix(tmp_path):
    from viewfinder.pipeline.store.records import IndexMissingError

    with pytest.raises(IndexMissingError, match="build one there first"):
        IndexStore.open(tmp_path / "nothing-here")


def test_newer_format_version_is_refused(tmp_path, make_images, tiny_encoder):
    make_images(2)
    index_folder(tiny_encoder, tmp_path / "images", tmp_path / "index")
    db = sqlite3.connect(tmp_path / "index" / "store.sqlite")
    manifest = json.loads(db.execute("SELECT value FROM meta WHERE key='manifest'").fetchone()[0])
    manifest["format_version"] = FORMAT_VERSION + 1
    db.execute("UPDATE meta SET value=? WHERE key='manifest'", (json.dumps(manifest),))
    db.commit()
    db.close()
    from viewfinder.pipeline.store.records import RebuildNeededError

    with pytest.raises(RebuildNeededError, match="rebuild it from its source"):
        IndexStore.open(tmp_path / "index")


# ------------------------------------------------------------------------------ folders, locks
def test_non_empty_folder_that_is_not_an_index_is_refused(tmp_path, make_images, tiny_encoder):
    make_images(2)
    precious = tmp_path / "documents"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not touch")
    with pytest.raises(StoreError, match="not empty"):
        index_folder(tiny_encoder, tmp_path / "images", precious)
    assert sorted(p.name for p in precious.iterdir()) == ["thesis.tex"]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        index_folder(tiny_encoder, tmp_path / "images", tmp_path / "afile")


def test_empty_existing_folder_is_accepted(tmp_path, make_images, tiny_encoder):
    make_images(2)
    (tmp_path / "empty").mkdir()
    assert index_folder(tiny_encoder, tmp_path / "images", tmp_path / "empty").count == 2


def _open_writer(path, encoder):
    return IndexStore.open_for_write(
        path,
        encoder_name=encoder.name,
        encoder_fingerprint=encoder.fingerprint,
        embed_dim=encoder.embed_dim,
        modality="image",
        factory="Flat",
        source="s",
    )


def test_concurrent_writer_is_locked_out(tmp_path, make_images, tiny_encoder):
    make_images(3)
    index_dir = tmp_path / "index"
    index_folder(tiny_encoder, tmp_path / "images", index_dir)
    writer = _open_writer(index_dir, tiny_encoder)
    try:
        with pytest.raises(StoreError, match="another viewfinder process"):
            _open_writer(index_dir, tiny_encoder)
        with pytest.raises(StoreError, match="another viewfinder process"):
            index_folder(tiny_encoder, tmp_path / "images", index_dir)
        # Readers are not blocked by a writer.
        assert len(IndexStore.open(index_dir)) == 3
    finally:
        writer.close()
    assert index_folder(tiny_encoder, tmp_path / "images", index_dir).count == 3  # lock released


def test_writer_lock_holds_across_processes(tmp_path, make_images, tiny_encoder):
    make_images(3)
    index_dir = tmp_path / "index"
    index_folder(tiny_encoder, tmp_path / "images", index_dir)
    writer = _open_writer(index_dir, tiny_encoder)
    try:
        code = (
            "import fcntl, sys\n"
            f"fh = open({str(index_dir / '.lock')!r}, 'w')\n"
            "try:\n    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(3)\n"
        )
        assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 3
    finally:
        writer.close()


# ------------------------------------------------------------------------------ encoder checks
def test_other_encoder_is_a_mismatch_naming_both(tmp_path, make_images, tiny_encoder, other_encoder):
    make_images(4)
    index_dir = tmp_path / "index"
    index_folder(tiny_encoder, tmp_path / "images", index_dir)
    with pytest.raises(EncoderMismatchError) as info:
        index_folder(other_encoder, tmp_path / "images", index_dir)
    message = str(info.value)
    assert "tiny-test" in message and "tiny-other" in message
    assert tiny_encoder.fingerprint[:12] in message and other_encoder.fingerprint[:12] in message
    assert "rebuild it with this encoder" in message
    with pytest.raises(EncoderMismatchError, match="tiny-other"):
        Searcher(IndexStore.open(index_dir), other_encoder)
    # Nothing was changed by the refused run.
    assert IndexStore.open(index_dir).manifest.encoder_fingerprint == tiny_encoder.fingerprint
    check_store_invariants(index_dir)


def test_rebuild_with_the_other_encoder_replaces_everything(tmp_path, make_images, tiny_encoder, other_encoder):
    make_images(5)
    index_dir = tmp_path / "index"
    index_folder(tiny_encoder, tmp_path / "images", index_dir)
    counting = CountingEncoder(other_encoder)
    report = Indexer(counting, tiny_index_config(), progress=False).run(tmp_path / "images", index_dir, rebuild=True)
    assert report.count == 5 and counting.images_encoded == 5
    store = IndexStore.open(index_dir)
    assert store.manifest.encoder_fingerprint == other_encoder.fingerprint
    assert store.manifest.encoder_name == "tiny-other"
    check_store_invariants(index_dir)
    # The vectors are the new encoder's.
    _, vectors = store.vectors()
    keys = [row.key for row in store.iter_items()]
    fresh = other_encoder.encode_images([random_image_from(tmp_path / "images" / k) for k in keys])
    np.testing.assert_allclose(vectors, fresh, atol=1e-5)
    hit = Searcher(store, other_encoder).search(image=tmp_path / "images" / "img0002.png", k=1).hits[0]
    assert hit.key == "img0002.png"
    with pytest.raises(EncoderMismatchError):
        Searcher(IndexStore.open(index_dir), tiny_encoder)
    # An incremental run with the new encoder is now a no-op.
    again = CountingEncoder(other_encoder)
    assert Indexer(again, tiny_index_config(), progress=False).run(tmp_path / "images", index_dir).added == 0
    assert again.embedded == 0


def random_image_from(path: Path):
    from viewfinder.pipeline.store.images import load_image

    return load_image(path)


def test_different_source_into_a_non_empty_index_is_an_error(tmp_path, make_images, tiny_encoder):
    make_images(3)
    make_images(3, folder=tmp_path / "other", seed=1)
    index_folder(tiny_encoder, tmp_path / "images", tmp_path / "index")
    with pytest.raises(StoreError, match="mirrors"):
        index_folder(tiny_encoder, tmp_path / "other", tmp_path / "index")
    assert {r.path for r in IndexStore.open(tmp_path / "index").iter_items()} == {
        str(p) for p in (tmp_path / "images").resolve().iterdir()
    }


# ------------------------------------------------------------------------------ FAISS types
def test_ivf_preset_indexes_and_grows(tmp_path, make_images, tiny_encoder):
    source, index_dir = tmp_path / "images", tmp_path / "index"
    make_images(40)
    report = index_folder(tiny_encoder, source, index_dir, factory="IVF")
    assert report.count == 40
    manifest = IndexStore.open(index_dir).manifest
    assert manifest.factory == "IVF" and manifest.faiss_spec == resolve_factory("IVF", 32, 40) == "IVF1,Flat"
    check_store_invariants(index_dir)
    # Growing past the trained size re-trains with more lists.
    write_images(source, 100, seed=3, prefix="more")
    report = index_folder(tiny_encoder, source, index_dir, factory="IVF")
    manifest = IndexStore.open(index_dir).manifest
    assert report.count == 140 and manifest.faiss_spec == resolve_factory("IVF", 32, 140) == "IVF3,Flat"
    check_store_invariants(index_dir)
    # Deleting and modifying work on an IVF index in place.
    (source / "img0000.png").unlink()
    random_image(np.random.default_rng(9)).save(source / "img0002.png")
    report = index_folder(tiny_encoder, source, index_dir, factory="IVF")
    assert report.count == 139 and report.removed == 1 and report.reembedded == 1
    check_store_invariants(index_dir)
    store = IndexStore.open(index_dir)
    searcher = Searcher(store, tiny_encoder, tiny_index_config(nprobe=3))
    assert searcher.search(image=source / "img0002.png", k=1).hits[0].key == "img0002.png"


def test_hnsw_factory_and_its_deletion_path(tmp_path, make_images, tiny_encoder):
    source, index_dir = tmp_path / "images", tmp_path / "index"
    make_images(30)
    index_folder(tiny_encoder, source, index_dir, factory="HNSW")
    store = IndexStore.open(index_dir)
    assert store.manifest.faiss_spec == "HNSW32,Flat"
    before = check_store_invariants(index_dir)
    generation = store.manifest.generation
    # HNSW cannot remove ids: deleting and modifying rebuild the index from the stored vectors.
    (source / "img0007.jpg").unlink()
    random_image(np.random.default_rng(12)).save(source / "img0008.png")
    report = index_folder(tiny_encoder, source, index_dir, factory="HNSW")
    assert report.removed == 1 and report.reembedded == 1 and report.count == 29
    after = check_store_invariants(index_dir)
    assert after == {k: v for k, v in before.items() if k != "img0007.jpg"}
    store = IndexStore.open(index_dir)
    assert store.manifest.generation == generation + 1
    assert before["img0007.jpg"] not in faiss_ids(store.index).tolist()
    searcher = Searcher(store, tiny_encoder, tiny_index_config(ef_search=64))
    assert searcher.search(image=source / "img0008.png", k=1).hits[0].key == "img0008.png"
    hits = searcher.search(image=source / "img0001.jpg", k=50).hits
    assert len(hits) == 29 and "img0007.jpg" not in {h.key for h in hits}


def test_changing_the_factory_converts_the_index(tmp_path, make_images, tiny_encoder):
    make_images(20)
    index_dir = tmp_path / "index"
    index_folder(tiny_encoder, tmp_path / "images", index_dir)
    before = check_store_invariants(index_dir)
    counting = CountingEncoder(tiny_encoder)
    Indexer(counting, tiny_index_config(factory="HNSW"), progress=False).run(tmp_path / "images", index_dir)
    assert counting.embedded == 0  # converted from the stored vectors, nothing re-embedded
    store = IndexStore.open(index_dir)
    assert store.manifest.factory == "HNSW" and store.manifest.faiss_spec == "HNSW32,Flat"
    assert check_store_invariants(index_dir) == before
    hit = Searcher(store, tiny_encoder).search(image=tmp_path / "images" / "img0011.jpg", k=1).hits[0]
    assert hit.key == "img0011.jpg"


def test_missing_faiss_file_is_a_store_error_with_the_fix(tmp_path, make_images, tiny_encoder):
    make_images(3)
    index_folder(tiny_encoder, tmp_path / "images", tmp_path / "index")
    for file in (tmp_path / "index").glob("index.*.faiss"):
        file.unlink()
    from viewfinder.pipeline.store.records import RebuildNeededError

    with pytest.raises(RebuildNeededError, match="repair the index"):
        _ = IndexStore.open(tmp_path / "index").index


def test_factory_string_needing_more_training_data_is_refused_before_embedding(tmp_path, make_images, tiny_encoder):
    make_images(5)
    counting = CountingEncoder(tiny_encoder)
    with pytest.raises(IndexBuildError, match="at least"):
        Indexer(counting, tiny_index_config(factory="IVF64,Flat"), progress=False).run(
            tmp_path / "images", tmp_path / "index"
        )
    assert counting.embedded == 0


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, dim))
    x = centres[rng.integers(0, 64, n)] + 0.35 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def test_ivf_search_agrees_with_exact_flat_on_seeded_data(tmp_path):
    data = _clustered(4200, 32, seed=0)
    base, queries = data[:4000], data[4000:]
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :10]  # ids are 0..N-1 in insertion order

    flat = synthetic_store(tmp_path / "flat", base, "Flat")
    assert flat.manifest.faiss_spec == "Flat"
    flat.configure_search(16, 64)
    scores, ids = flat.search_vectors(queries, 10)
    assert _recall(ids, truth) == 1.0  # Flat is exact
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ base.T, truth, axis=1), atol=1e-5)

    ivf = synthetic_store(tmp_path / "ivf", base, "IVF")
    nlist = int(ivf.manifest.faiss_spec.split(",")[0][3:])
    assert nlist > 16
    ivf.configure_search(nprobe=16, ef_search=64)
    _, ids16 = ivf.search_vectors(queries, 10)
    assert _recall(ids16, truth) >= 0.95
    ivf.configure_search(nprobe=1, ef_search=64)
    _, ids1 = ivf.search_vectors(queries, 10)
    ivf.configure_search(nprobe=nlist, ef_search=64)
    _, ids_all = ivf.search_vectors(queries, 10)
    assert _recall(ids_all, truth) == 1.0  # visiting every list is exact
    assert _recall(ids1, truth) < _recall(ids16, truth)  # nprobe reaches the loaded index

    hnsw = synthetic_store(tmp_path / "hnsw", base, "HNSW")
    hnsw.configure_search(16, ef_search=128)
    _, ids_h = hnsw.search_vectors(queries, 10)
    assert _recall(ids_h, truth) >= 0.95


def test_k_is_capped_by_the_collection_size(tmp_path):
    store = synthetic_store(tmp_path / "s", _clustered(7, 32, seed=1), "Flat")
    scores, ids = store.search_vectors(_clustered(2, 32, seed=2), 100)
    assert ids.shape == (2, 7) and (ids >= 0).all()


# ------------------------------------------------------------------------------ crash safety
_WORKER = textwrap.dedent(
    """
    import os, sys, time
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from viewfinder.pipeline.stages.presets import load_preset
    from viewfinder.pipeline.store.indexer import Indexer
    from viewfinder.adapters.registry import load_encoder

    source, index_dir, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
    encoder = load_encoder("tiny-test")

    class SlowEncoder:
        # A slow model: long enough runs to be killed in the middle, deterministically.
        def __init__(self, inner):
            self._inner = inner
        def __getattr__(self, name):
            return getattr(self._inner, name)
        def encode_image_tensors(self, pixels):
            time.sleep(pause)
            return self._inner.encode_image_tensors(pixels)

    config = load_preset("tiny").index
    config.batch_size = 8
    config.checkpoint_every = 8
    config.num_workers = 0
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":  # loaded ahead of time; start when told
        sys.exit(0)
    report = Indexer(SlowEncoder(encoder), config, progress=False).run(source, index_dir)
    print("done", report.count, flush=True)
    """
)


def _spawn_worker(tmp_path: Path, source: Path, index_dir: Path, pause: float) -> subprocess.Popen:
    """Start an indexing subprocess; it loads the model, says "ready" and waits for "go"."""
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(source), str(index_dir), str(pause)],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )


def _go(proc: subprocess.Popen) -> None:
    """Wait until the worker has loaded its model, then let it index."""
    readable, _, _ = select.select([proc.stdout], [], [], 300)  # the model loads in seconds; allow a busy machine
    line = proc.stdout.readline() if readable else "<no answer within 300 s>"
    if line.strip() != "ready":
        _kill(proc)
        pytest.fail(f"indexing subprocess did not start: {line!r} {proc.stderr.read()[-3000:]!r}")
    proc.stdin.write("go\n")
    proc.stdin.flush()


def _pending_count(index_dir: Path) -> int:
    try:
        with ro_connect(index_dir) as db:
            return int(db.execute("SELECT COUNT(*) FROM pending").fetchone()[0])
    except sqlite3.OperationalError:  # busy for a moment while the writer checkpoints
        return 0


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            stream.close()
        except OSError:  # a broken pipe to a killed process
            pass


def _fresh_vectors(encoder, source: Path, tmp_path: Path) -> dict[str, np.ndarray]:
    """Every image's embedding from an uninterrupted run into a new index."""
    fresh_dir = tmp_path / "fresh-index"
    index_folder(encoder, source, fresh_dir)
    store = IndexStore.open(fresh_dir)
    ids, vectors = store.vectors()
    keys = {row.id: row.key for row in store.iter_items()}
    return {keys[int(i)]: v for i, v in zip(ids, vectors, strict=True)}


@pytest.mark.slow  # spawns indexing processes and kills them
def test_killed_run_keeps_the_old_generation_and_resumes(tmp_path, tiny_encoder):
    source, index_dir = tmp_path / "images", tmp_path / "index"
    # 13 batches of 8 at >= 0.25 s each: several seconds in which to catch the run mid-way.
    proc = _spawn_worker(tmp_path, source, index_dir, pause=0.25)  # loads while the first run goes
    try:
        first = write_images(source, 100, seed=21, prefix="a")
        write_corrupt_files(source)
        index_folder(tiny_encoder, source, index_dir)
        old = check_store_invariants(index_dir)
        assert set(old) == {p.name for p in first}
        write_images(source, 100, seed=22, prefix="b")
        _go(proc)
        deadline = time.monotonic() + 120
        while _pending_count(index_dir) < 16:
            if proc.poll() is not None:
                pytest.fail(f"the run finished before it could be killed: {proc.stdout.read()!r}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpointed embeddings appeared within 120 s")
            time.sleep(0.02)
    finally:
        _kill(proc)
    assert proc.returncode == -signal.SIGKILL

    # The old generation opens, is consistent, and searches.
    with ro_connect(index_dir) as db:
        pending_keys = {k for (k,) in db.execute("SELECT key FROM pending WHERE vector IS NOT NULL")}
    assert pending_keys and all(k.startswith("b") for k in pending_keys)
    assert check_store_invariants(index_dir) == old
    store = IndexStore.open(index_dir)
    searcher = Searcher(store, tiny_encoder)
    result = searcher.search(image=source / "a0003.jpg", k=150)
    assert result.hits[0].key == "a0003.jpg"
    assert len(result.hits) == 100 and all(h.key.startswith("a") for h in result.hits)
    store.close()

    # Resume in-process: the checkpointed embeddings are reused, the rest embedded, nothing twice.
    counting = CountingEncoder(tiny_encoder)
    report = Indexer(counting, tiny_index_config(batch_size=8, checkpoint_every=8), progress=False).run(
        source, index_dir
    )
    assert report.resumed >= len(pending_keys) > 0
    assert counting.images_encoded == 100 - report.resumed
    assert report.added + report.resumed == 100
    assert report.count == 200
    final = check_store_invariants(index_dir)
    assert {k: final[k] for k in old} == old
    assert set(final) == {p.name for p in source.iterdir() if not p.name.startswith("broken")}
    with ro_connect(index_dir) as db:
        assert db.execute("SELECT COUNT(*) FROM pending").fetchone()[0] == 0
        assert {k for (k,) in db.execute("SELECT key FROM skipped")} == {
            "broken_truncated.jpg",
            "broken_empty.png",
            "broken_text.png",
        }

    # Resumed embeddings are the ones a fresh run computes.
    fresh = _fresh_vectors(tiny_encoder, source, tmp_path)
    store = IndexStore.open(index_dir)
    ids, vectors = store.vectors()
    keys = {row.id: row.key for row in store.iter_items()}
    resumed = {keys[int(i)]: v for i, v in zip(ids, vectors, strict=True)}
    for key in pending_keys:
        np.testing.assert_allclose(resumed[key], fresh[key], atol=1e-5)
    for key in final:
        np.testing.assert_allclose(resumed[key], fresh[key], atol=1e-5)


@pytest.mark.slow  # spawns indexing processes and kills them
def test_kill_at_random_moments_keeps_the_invariant(tmp_path, tiny_encoder):
    source, index_dir = tmp_path / "images", tmp_path / "index"
    write_images(source, 40, seed=31, prefix="base")
    index_folder(tiny_encoder, source, index_dir)
    rng = np.random.default_rng(2024)
    expected = 40
    workers = [_spawn_worker(tmp_path, source, index_dir, pause=0.1) for _ in range(3)]  # load in parallel
    try:
        _random_kill_rounds(source, index_dir, workers, rng, tiny_encoder)
    finally:
        for proc in workers:
            _kill(proc)
    expected += 3 * 24
    counting = CountingEncoder(tiny_encoder)
    report = Indexer(counting, tiny_index_config(batch_size=8, checkpoint_every=8), progress=False).run(
        source, index_dir
    )
    assert report.count == expected
    final = check_store_invariants(index_dir)
    assert len(final) == expected == len(list(source.iterdir()))
    assert counting.images_encoded + report.resumed + report.unchanged == expected


def _random_kill_rounds(source, index_dir, workers, rng, encoder) -> None:
    for round_, proc in enumerate(workers):
        before = check_store_invariants(index_dir, check_manifest_file=False)
        write_images(source, 24, seed=40 + round_, prefix=f"r{round_}_")
        delay = float(rng.uniform(0.0, 1.2))  # from before embedding starts to around the commit
        try:
            _go(proc)
            time.sleep(delay)
        finally:
            _kill(proc)
        # Either the old generation or the new one, whole: never a mixture.
        after = check_store_invariants(index_dir, check_manifest_file=False)
        everything = {p.name for p in source.iterdir()}
        assert after == before or set(after) == everything
        assert {k: after[k] for k in before} == before
        store = IndexStore.open(index_dir)
        hits = Searcher(store, encoder).search(image=source / "base0001.jpg", k=1).hits
        assert hits[0].key == "base0001.jpg"
        store.close()


def test_rebuild_with_an_encoder_of_another_dimension(tmp_path, make_images, tiny_encoder):
    """Switching to another architecture (another embedding size) through --rebuild."""
    from viewfinder.adapters.registry import load_encoder
    from viewfinder.pipeline.config import config_root

    arch = json.loads((config_root() / "arch" / "tiny-test.json").read_text())
    arch["embed_dim"] = 16
    arch_file = tmp_path / "tiny-16.json"
    arch_file.write_text(json.dumps(arch))
    narrow = load_encoder({"name": "tiny-16", "arch": str(arch_file), "weights": "random"})
    assert narrow.embed_dim == 16

    make_images(6)
    index_dir = tmp_path / "index"
    index_folder(tiny_encoder, tmp_path / "images", index_dir)
    with pytest.raises(EncoderMismatchError):
        index_folder(narrow, tmp_path / "images", index_dir)
    index_folder(narrow, tmp_path / "images", index_dir, rebuild=True)
    store = IndexStore.open(index_dir)
    assert store.manifest.embed_dim == 16
    assert store.vectors()[1].shape == (6, 16)
    assert Searcher(store, narrow).search(image=tmp_path / "images" / "img0003.jpg", k=1).hits[0].key == "img0003.jpg"
    check_store_invariants(index_dir)
