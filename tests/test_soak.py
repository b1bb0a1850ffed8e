"""A few seconds of the soak (`viewfinder bench soak` runs it for minutes), and readers holding a
generation while writers commit newer ones or repair the index."""

from __future__ import annotations

import gc

from helpers import check_store_invariants, tiny_index_config, write_images

from viewfinder.pipeline.bench.soak import open_fds, soak
from viewfinder.pipeline.store.health import repair_index
from viewfinder.pipeline.store.index_store import IndexStore
from viewfinder.pipeline.store.indexer import Indexer
from viewfinder.pipeline.store.search import Searcher


def test_a_short_soak_has_no_errors_and_leaves_no_descriptor_open(tmp_path):
    write_images(tmp_path / "pool", 60, seed=5)
    before = open_fds()
    report = soak(tmp_path / "pool", tmp_path / "work", preset="tiny", seconds=6, collection=30, sample_every=5)
    assert report.errors == 0, report.error_examples
    assert set(report.operations) == {"search", "image", "feedback", "reindex"}
    assert report.generations >= 1 and len(report.samples) >= 5
    gc.collect()  # the pipeline and its stores are garbage now: their SQLite files close with them
    assert open_fds() <= before + 2


def test_a_reader_keeps_its_generation_while_two_newer_ones_commit_and_a_repair_runs(tmp_path, tiny_encoder):
    source, index_dir = tmp_path / "images", tmp_path / "index"
    write_images(source, 10, seed=1)
    run = Indexer(tiny_encoder, tiny_index_config(), progress=False)
    run.run(source, index_dir)
    reader = IndexStore.open(index_dir)
    searcher = Searcher(reader, tiny_encoder)
    with reader.read_snapshot() as held:
        old_hits = {h.key for h in searcher.search(image=source / "img0001.jpg", k=20).hits}
        for n, seed in ((3, 2), (4, 3)):  # two newer generations while the snapshot is held
            write_images(source, n, seed=seed, prefix=f"g{seed}_")
            run.run(source, index_dir)
        (newest,) = index_dir.glob("index.*.faiss")
        newest.write_bytes(newest.read_bytes()[:100])  # damaged: the repair makes a third generation
        assert repair_index(index_dir).generation == held.generation + 3
        same = {h.key for h in searcher.search(image=source / "img0001.jpg", k=20).hits}
        assert same == old_hits and len(same) == 10 and reader.manifest.generation == held.generation
    newest = {h.key for h in searcher.search(image=source / "img0001.jpg", k=20).hits}
    assert len(newest) == 17 and reader.manifest.generation == held.generation + 3
    assert len(check_store_invariants(index_dir)) == 17
