"""Crash safety of a commit, injected deterministically, and readers across commits.

A crash between writing the next generation's FAISS file and the SQLite transaction leaves the old
generation readable; the orphaned file is removed by the next writer and the next run resumes. A
reader keeps answering from one generation while a writer commits, and sees the new one after.
"""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest
from helpers import CountingEncoder, check_store_invariants, random_image, ro_connect, tiny_index_config

from viewfinder.pipeline.store import index_store as index_store_module
from viewfinder.pipeline.store.index_store import IndexStore, StoreError
from viewfinder.pipeline.store.indexer import Indexer
from viewfinder.pipeline.store.search import Searcher


class SimulatedCrash(RuntimeError):
    pass


def run_index(encoder, source, index_dir, **overrides):
    counting = CountingEncoder(encoder)
    report = Indexer(counting, tiny_index_config(**overrides), progress=False).run(source, index_dir)
    return report, counting


def faiss_files(index_dir):
    return sorted(p.name for p in index_dir.glob("index.*.faiss"))


def crash_at_the_commit_point(monkeypatch, index_dir, seen: list[list[str]]) -> None:
    """Make the SQLite commit step raise, after recording which FAISS files were on disk by then."""

    def crash(self, plan):
        seen.append(faiss_files(index_dir))
        raise SimulatedCrash("killed between the FAISS file and the SQLite commit")

    monkeypatch.setattr(IndexStore, "_apply_commit", crash)


def change_source(source):
    """Three new images, one deleted, one modified."""
    rng = np.random.default_rng(123)
    for name in ("new0.png", "new1.png", "new2.png"):
        random_image(rng).save(source / name)
    (source / "img0005.jpg").unlink()
    random_image(rng).save(source / "img0002.png")


# ------------------------------------------------------------------------------ crash at the commit point
@pytest.mark.parametrize("factory", ["Flat", "HNSW"])  # updated in place / rebuilt from the stored vectors
def test_crash_between_faiss_file_and_sqlite_commit(tmp_path, make_images, tiny_encoder, monkeypatch, factory):
    source, index_dir = tmp_path / "images", tmp_path / "index"
    make_images(10)
    run_index(tiny_encoder, source, index_dir, factory=factory)
    old = check_store_invariants(index_dir)
    assert faiss_files(index_dir) == ["index.1.faiss"]
    change_source(source)

    seen: list[list[str]] = []
    with monkeypatch.context() as patch:
        crash_at_the_commit_point(patch, index_dir, seen)
        with pytest.raises(SimulatedCrash):
            run_index(tiny_encoder, source, index_dir, factory=factory)
    assert seen == [["index.1.faiss", "index.2.faiss"]]  # the next generation was written aside

    # The previous generation is what readers see, whole, and it searches.
    assert check_store_invariants(index_dir) == old
    store = IndexStore.open(index_dir)
    assert store.manifest.generation == 1
    hits = Searcher(store, tiny_encoder).search(image=source / "img0003.jpg", k=20).hits
    assert hits[0].key == "img0003.jpg" and {h.key for h in hits} == set(old)
    store.close()
    with ro_connect(index_dir) as db:
        assert db.execute("SELECT COUNT(*) FROM pending WHERE vector IS NOT NULL").fetchone()[0] == 4

    # The next writer removes the orphaned file before doing anything else.
    IndexStore.open_for_write(
        index_dir,
        encoder_name=tiny_encoder.name,
        encoder_fingerprint=tiny_encoder.fingerprint,
        embed_dim=tiny_encoder.embed_dim,
        modality="image",
        factory=factory,
        source=str(source),
    ).close()
    assert faiss_files(index_dir) == ["index.1.faiss"]

    # The next run resumes: nothing is embedded again.
    report, counting = run_index(tiny_encoder, source, index_dir, factory=factory)
    assert counting.embedded == 0 and counting.image_calls == 0
    assert report.resumed == 4 and report.added == report.reembedded == 0
    assert report.removed == 1 and report.count == 12
    final = check_store_invariants(index_dir)
    assert {k: v for k, v in old.items() if k != "img0005.jpg"} == {k: final[k] for k in old if k != "img0005.jpg"}
    assert faiss_files(index_dir) == ["index.2.faiss"]
    store = IndexStore.open(index_dir)
    assert Searcher(store, tiny_encoder).search(image=source / "new1.png", k=1).hits[0].key == "new1.png"


def test_crash_in_the_first_commit_leaves_an_empty_index_that_says_so(tmp_path, make_images, tiny_encoder, monkeypatch):
    source, index_dir = tmp_path / "images", tmp_path / "index"
    make_images(6)
    with monkeypatch.context() as patch:
        crash_at_the_commit_point(patch, index_dir, [])
        with pytest.raises(SimulatedCrash):
            run_index(tiny_encoder, source, index_dir)
    store = IndexStore.open(index_dir)
    with pytest.raises(StoreError, match="is empty") as info:
        Searcher(store, tiny_encoder).search("anything")
    assert "into it" in str(info.value) and str(index_dir) in str(info.value)
    store.close()
    report, counting = run_index(tiny_encoder, source, index_dir)
    assert counting.embedded == 0 and report.resumed == 6 and report.count == 6
    check_store_invariants(index_dir)


# ------------------------------------------------------------------------------ readers across commits
def all_keys(searcher: Searcher, query_image) -> list[str]:
    return [h.key for h in searcher.search(image=query_image, k=50).hits]


def test_reader_opened_before_a_commit_answers_from_one_generation(tmp_path, make_images, tiny_encoder, monkeypatch):
    source, index_dir = tmp_path / "images", tmp_path / "index"
    make_images(10)
    run_index(tiny_encoder, source, index_dir)
    old = set(check_store_invariants(index_dir))
    reader = Searcher(IndexStore.open(index_dir), tiny_encoder)
    query = source / "img0001.jpg"
    assert set(all_keys(reader, query)) == old
    change_source(source)

    during: list[list[str]] = []
    original = index_store_module.apply_rows

    def apply_rows_then_search(db, plan):
        during.append(all_keys(reader, query))  # FAISS file of generation 2 written, SQLite not touched yet
        original(db, plan)
        during.append(all_keys(reader, query))  # inside the writer's transaction, not committed yet

    with monkeypatch.context() as patch:
        patch.setattr(index_store_module, "apply_rows", apply_rows_then_search)
        run_index(tiny_encoder, source, index_dir)
    assert [set(keys) for keys in during] == [old, old]

    new = set(check_store_invariants(index_dir))
    assert new == old - {"img0005.jpg"} | {"new0.png", "new1.png", "new2.png"}
    assert set(all_keys(reader, query)) == new  # the same searcher, now on generation 2
    assert reader.store.manifest.generation == 2 and reader.store.index.ntotal == len(new)
    assert reader.search(image=source / "img0002.png", k=1).hits[0].score > 0.9999  # the modified image's vector


def test_commit_in_the_middle_of_a_query_does_not_mix_generations(tmp_path, make_images, tiny_encoder, monkeypatch):
    """FAISS searched on generation 1, then a commit, then the id lookup: the lookup still reads generation 1."""
    source, index_dir = tmp_path / "images", tmp_path / "index"
    make_images(10)
    run_index(tiny_encoder, source, index_dir)
    old = set(check_store_invariants(index_dir))
    store = IndexStore.open(index_dir)
    reader = Searcher(store, tiny_encoder)
    change_source(source)
    lookup = store.items_by_id

    def commit_then_lookup(ids):
        if not reports:
            reports.append(run_index(tiny_encoder, source, index_dir)[0])
        return lookup(ids)

    reports: list = []
    monkeypatch.setattr(store, "items_by_id", commit_then_lookup)
    hits = reader.search(image=source / "img0001.jpg", k=50).hits
    assert reports and reports[0].count == 12  # the commit happened between FAISS and SQLite
    assert {h.key for h in hits} == old  # every id FAISS returned was found, deleted img0005.jpg included
    assert {h.key for h in reader.search(image=source / "img0001.jpg", k=50).hits} == set(
        check_store_invariants(index_dir)
    )


def test_generation_replaced_while_a_reader_loads_it_is_retried(tmp_path, make_images, tiny_encoder, monkeypatch):
    """A reader about to load generation 1 when a commit removes its file loads generation 2 instead."""
    source, index_dir = tmp_path / "images", tmp_path / "index"
    make_images(10)
    run_index(tiny_encoder, source, index_dir)
    store = IndexStore.open(index_dir)
    reader = Searcher(store, tiny_encoder)
    change_source(source)
    load = store._load_index
    loaded: list[int] = []

    def commit_then_load(manifest):
        if not loaded:
            run_index(tiny_encoder, source, index_dir)
            assert faiss_files(index_dir) == ["index.2.faiss"]
        loaded.append(manifest.generation)
        return load(manifest)

    monkeypatch.setattr(store, "_load_index", commit_then_load)
    hits = reader.search(image=source / "new2.png", k=50).hits
    assert loaded == [1, 2]
    assert hits[0].key == "new2.png" and {h.key for h in hits} == set(check_store_invariants(index_dir))


def test_missing_faiss_file_is_still_an_error_for_a_searcher(tmp_path, make_images, tiny_encoder):
    make_images(3)
    run_index(tiny_encoder, tmp_path / "images", tmp_path / "index")
    (tmp_path / "index" / "index.1.faiss").unlink()
    searcher = Searcher(IndexStore.open(tmp_path / "index"), tiny_encoder)
    with pytest.raises(StoreError, match="repair the index"):
        searcher.search("red")


def test_long_lived_searcher_follows_new_generations_with_its_search_settings(tmp_path, make_images, tiny_encoder):
    source, index_dir = tmp_path / "images", tmp_path / "index"
    make_images(80)
    run_index(tiny_encoder, source, index_dir, factory="IVF")
    store = IndexStore.open(index_dir)
    searcher = Searcher(store, tiny_encoder, tiny_index_config(nprobe=2))
    assert searcher.search(image=source / "img0001.jpg", k=1).hits[0].key == "img0001.jpg"
    first = store.index
    random_image(np.random.default_rng(5)).save(source / "late.png")
    run_index(tiny_encoder, source, index_dir, factory="IVF")
    hit = searcher.search(image=source / "late.png", k=1).hits[0]
    assert hit.key == "late.png" and hit.score > 0.9999
    assert store.index is not first and store.index.ntotal == 81
    assert faiss.extract_index_ivf(store.index).nprobe == 2  # the searcher's settings survive the reload
    unchanged = store.index
    searcher.search("red", k=3)
    assert store.index is unchanged  # no commit, no reload


def test_reader_thread_sees_one_whole_generation_at_a_time(tmp_path, make_images, tiny_encoder):
    source, index_dir = tmp_path / "images", tmp_path / "index"
    make_images(10)
    run_index(tiny_encoder, source, index_dir)
    generations = [set(check_store_invariants(index_dir))]
    store = IndexStore.open(index_dir)
    reader = Searcher(store, tiny_encoder)
    query = reader.encode_query_image(source / "img0001.jpg")
    answers: list[frozenset[str]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def answer() -> frozenset[str]:
        return frozenset(h.key for h in reader.search_vectors(query, 50)[0])

    def read() -> None:
        try:
            while not stop.is_set() or len(answers) < 3:
                answers.append(answer())
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        rng = np.random.default_rng(9)
        for round_ in range(3):
            random_image(rng).save(source / f"more{round_}.png")
            (source / f"img{2 * round_:04d}.png").unlink()
            run_index(tiny_encoder, source, index_dir)
            generations.append(set(check_store_invariants(index_dir)))
    finally:
        stop.set()
        thread.join(timeout=300)
    assert not thread.is_alive() and not errors, errors
    assert set(answers) <= {frozenset(g) for g in generations}  # never a mixture of two generations
    assert answer() == frozenset(generations[-1])  # the same searcher, after the last commit
    store.close()
