"""Incremental indexing: corrupt files, re-runs, additions, modifications, touches, deletions,
JSONL manifests and the text modality."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    CountingEncoder,
    check_store_invariants,
    faiss_ids,
    random_image,
    ro_connect,
    tiny_index_config,
    write_corrupt_files,
)

from viewfinder.pipeline.store.faiss_index import IndexBuildError
from viewfinder.pipeline.store.index_store import IndexStore, StoreError
from viewfinder.pipeline.store.indexer import Indexer
from viewfinder.pipeline.store.search import Searcher
from viewfinder.pipeline.store.sources import SourceError


def run_index(encoder, source, index_dir, **kwargs):
    """One indexing run with the tiny preset; returns (report, counting encoder).

    ``counting=[]`` receives the counting encoder too, for runs expected to raise.
    """
    modality = kwargs.pop("modality", "image")
    rebuild = kwargs.pop("rebuild", False)
    counting = CountingEncoder(encoder)
    kwargs.pop("counting", []).append(counting)
    report = Indexer(counting, tiny_index_config(**kwargs), progress=False).run(
        source, index_dir, modality=modality, rebuild=rebuild
    )
    return report, counting


def key_ids(index_dir: Path) -> dict[str, int]:
    with ro_connect(index_dir) as db:
        return dict(db.execute("SELECT key, id FROM items").fetchall())


def stored_row(index_dir: Path, key: str) -> tuple:
    with ro_connect(index_dir) as db:
        return db.execute("SELECT id, size, mtime_ns, sha256, vector FROM items WHERE key = ?", (key,)).fetchone()


@pytest.fixture
def indexed(tmp_path, make_images, tiny_encoder):
    """A folder of 10 images indexed once: (source folder, index folder, first report)."""
    source = tmp_path / "images"
    make_images(10)
    index_dir = tmp_path / "index"
    report, _ = run_index(tiny_encoder, source, index_dir)
    assert report.added == 10 and report.count == 10 and not report.skipped
    return source, index_dir, report


# ------------------------------------------------------------------------------ corrupt files
def test_corrupt_files_are_skipped_with_reasons_and_do_not_stop_the_run(tmp_path, make_images, tiny_encoder):
    source = tmp_path / "images"
    good = make_images(12)
    broken = write_corrupt_files(source)
    (source / "notes.txt").write_text("not listed: not an image extension")
    (source / ".hidden.png").write_bytes(b"ignored: hidden")
    # Decode in worker processes, as a real run does.
    report, enc = run_index(tiny_encoder, source, tmp_path / "index", num_workers=2, batch_size=4)

    assert report.count == 12 and report.added == 12
    assert enc.images_encoded == 12
    reasons = dict(report.skipped)
    assert set(reasons) == {str(p) for p in broken.values()}
    assert reasons[str(broken["truncated"])].startswith("truncated or corrupt")
    assert reasons[str(broken["empty"])].startswith("empty file")
    assert reasons[str(broken["text"])].startswith("not an image")
    assert set(key_ids(tmp_path / "index")) == {p.name for p in good}
    check_store_invariants(tmp_path / "index")

    # The failures are remembered: a re-run embeds nothing and still reports them.
    again, enc = run_index(tiny_encoder, source, tmp_path / "index", num_workers=2, batch_size=4)
    assert again.added == 0 and enc.embedded == 0 and enc.image_calls == 0
    assert {where for where, _ in again.skipped} == {str(p) for p in broken.values()}

    # Repairing a broken file gets it indexed.
    random_image(np.random.default_rng(1)).save(broken["text"], "PNG")
    fixed, enc = run_index(tiny_encoder, source, tmp_path / "index")
    assert fixed.added == 1 and enc.images_encoded == 1 and fixed.count == 13
    assert str(broken["text"]) not in dict(fixed.skipped)
    check_store_invariants(tmp_path / "index")


def test_nested_folders_use_relative_keys(tmp_path, make_images, tiny_encoder):
    make_images(2, folder=tmp_path / "src" / "a" / "b")
    make_images(1, folder=tmp_path / "src", prefix="top")
    run_index(tiny_encoder, tmp_path / "src", tmp_path / "index")
    assert set(key_ids(tmp_path / "index")) == {"a/b/img0000.png", "a/b/img0001.jpg", "top0000.png"}


def test_index_folder_inside_the_source_is_not_indexed(tmp_path, make_images, tiny_encoder):
    source = tmp_path / "images"
    make_images(3)
    report, _ = run_index(tiny_encoder, source, source / "index")
    # Put an image inside the index folder: it must not become part of the collection.
    random_image(np.random.default_rng(0)).save(source / "index" / "stray.png")
    again, enc = run_index(tiny_encoder, source, source / "index")
    assert report.count == again.count == 3 and enc.embedded == 0


def test_missing_source_is_a_source_error(tmp_path, tiny_encoder):
    with pytest.raises(SourceError, match="not found"):
        run_index(tiny_encoder, tmp_path / "nope", tmp_path / "index")
    (tmp_path / "list.csv").write_text("a,b\n")
    with pytest.raises(SourceError, match="jsonl"):
        run_index(tiny_encoder, tmp_path / "list.csv", tmp_path / "index")


# ------------------------------------------------------------------------------ incremental runs
def test_rerun_is_a_no_op(indexed, tiny_encoder):
    source, index_dir, _ = indexed
    before = key_ids(index_dir)
    generation = json.loads((index_dir / "manifest.json").read_text())["generation"]
    report, enc = run_index(tiny_encoder, source, index_dir)
    assert report.added == report.reembedded == report.removed == report.resumed == 0
    assert report.unchanged == 10 and report.count == 10
    assert enc.embedded == 0 and enc.image_calls == 0
    assert key_ids(index_dir) == before
    assert json.loads((index_dir / "manifest.json").read_text())["generation"] == generation
    check_store_invariants(index_dir)


def test_added_file_is_the_only_one_embedded(indexed, tiny_encoder):
    source, index_dir, _ = indexed
    before = key_ids(index_dir)
    random_image(np.random.default_rng(42)).save(source / "new.png")
    report, enc = run_index(tiny_encoder, source, index_dir)
    assert report.added == 1 and report.unchanged == 10 and report.count == 11
    assert enc.images_encoded == 1
    after = check_store_invariants(index_dir)
    assert {k: after[k] for k in before} == before  # old ids untouched
    assert after["new.png"] not in before.values()


def test_modified_file_is_reembedded_with_the_same_id(indexed, tiny_encoder):
    source, index_dir, _ = indexed
    before = key_ids(index_dir)
    target = source / "img0002.png"
    old_id, _, old_mtime, old_sha, old_vec = stored_row(index_dir, "img0002.png")
    random_image(np.random.default_rng(77)).save(target, "PNG")
    os.utime(target, ns=(old_mtime + 5 * 10**9, old_mtime + 5 * 10**9))
    report, enc = run_index(tiny_encoder, source, index_dir)
    assert report.reembedded == 1 and report.added == 0 and report.unchanged == 9 and report.count == 10
    assert enc.images_encoded == 1
    new_id, _, new_mtime, new_sha, new_vec = stored_row(index_dir, "img0002.png")
    assert new_id == old_id
    assert new_sha != old_sha and new_mtime == old_mtime + 5 * 10**9 and new_vec != old_vec
    assert check_store_invariants(index_dir) == before
    # The index now finds the new content under the old id.
    hit = Searcher(IndexStore.open(index_dir), tiny_encoder).search(image=target, k=1).hits[0]
    assert (hit.key, hit.id) == ("img0002.png", old_id) and hit.score > 0.9999


def test_same_size_modification_is_detected(indexed, tiny_encoder):
    source, index_dir, _ = indexed
    target = source / "img0004.png"
    old_id, size, old_mtime, old_sha, _ = stored_row(index_dir, "img0004.png")
    # Another picture, padded to exactly the old file's size: size alone cannot tell them apart.
    target.write_bytes(_png_of_size(random_image(np.random.default_rng(5), (20, 20)), size))
    os.utime(target, ns=(old_mtime + 10**9, old_mtime + 10**9))
    assert target.stat().st_size == size
    report, enc = run_index(tiny_encoder, source, index_dir)
    assert report.reembedded == 1 and enc.images_encoded == 1
    new_id, _, _, new_sha, _ = stored_row(index_dir, "img0004.png")
    assert new_id == old_id and new_sha != old_sha


def _png_of_size(image, size: int) -> bytes:
    """PNG bytes of ``image`` padded with a tEXt chunk to exactly ``size`` bytes."""
    import struct
    import zlib

    from helpers import image_bytes

    base = image_bytes(image, "PNG")
    pad = size - len(base) - 12 - len(b"c\x00")  # chunk overhead and keyword
    assert pad >= 0, "original image too small to pad to"
    payload = b"c\x00" + b"x" * pad
    chunk = struct.pack(">I", len(payload)) + b"tEXt" + payload + struct.pack(">I", zlib.crc32(b"tEXt" + payload))
    iend = base.rindex(b"IEND") - 4
    return base[:iend] + chunk + base[iend:]


def test_touched_file_is_not_reembedded(indexed, tiny_encoder):
    source, index_dir, _ = indexed
    target = source / "img0003.jpg"
    old_id, _, old_mtime, old_sha, old_vec = stored_row(index_dir, "img0003.jpg")
    os.utime(target, ns=(old_mtime + 7 * 10**9, old_mtime + 7 * 10**9))
    report, enc = run_index(tiny_encoder, source, index_dir)
    assert enc.embedded == 0 and report.reembedded == 0 and report.added == 0
    assert report.unchanged == 10 and report.metadata_updated == 1
    new_id, _, new_mtime, new_sha, new_vec = stored_row(index_dir, "img0003.jpg")
    assert (new_id, new_sha, new_vec) == (old_id, old_sha, old_vec)
    assert new_mtime == old_mtime + 7 * 10**9  # recorded, so the next run need not hash it again
    again, enc = run_index(tiny_encoder, source, index_dir)
    assert again.metadata_updated == 0 and enc.embedded == 0
    check_store_invariants(index_dir)


def test_deleted_file_is_removed_from_faiss_and_sqlite(indexed, tiny_encoder):
    source, index_dir, _ = indexed
    before = key_ids(index_dir)
    (source / "img0005.jpg").unlink()
    report, enc = run_index(tiny_encoder, source, index_dir)
    assert report.removed == 1 and report.count == 9 and enc.embedded == 0
    after = check_store_invariants(index_dir)
    assert "img0005.jpg" not in after
    assert after == {k: v for k, v in before.items() if k != "img0005.jpg"}
    store = IndexStore.open(index_dir)
    assert before["img0005.jpg"] not in store.items_by_id([before["img0005.jpg"]])

    assert before["img0005.jpg"] not in faiss_ids(store.index).tolist()
    # Searching never returns it.
    hits = Searcher(store, tiny_encoder).search(image=source / "img0004.png", k=20).hits
    assert len(hits) == 9 and "img0005.jpg" not in {h.key for h in hits}


def test_ids_are_stable_and_never_reused(indexed, tiny_encoder):
    source, index_dir, _ = indexed
    first = key_ids(index_dir)
    (source / "img0009.jpg").unlink()
    run_index(tiny_encoder, source, index_dir)
    random_image(np.random.default_rng(8)).save(source / "later.png")
    run_index(tiny_encoder, source, index_dir)
    third = key_ids(index_dir)
    assert {k: third[k] for k in first if k != "img0009.jpg"} == {k: v for k, v in first.items() if k != "img0009.jpg"}
    assert third["later.png"] > max(first.values())  # the deleted id is not handed out again


def test_deleting_everything_leaves_an_empty_index_that_says_so(indexed, tiny_encoder):
    source, index_dir, _ = indexed
    for path in list(source.iterdir()):
        path.unlink()
    report, _ = run_index(tiny_encoder, source, index_dir)
    assert report.count == 0 and report.removed == 10
    check_store_invariants(index_dir)
    searcher = Searcher(IndexStore.open(index_dir), tiny_encoder)
    with pytest.raises(StoreError, match="is empty") as info:
        searcher.search("anything", k=5)
    assert f"index {source.resolve()} into it" in str(info.value)


def test_moved_collection_with_rebuild_replaces_items(indexed, tiny_encoder, tmp_path):
    source, index_dir, _ = indexed
    moved = tmp_path / "moved"
    shutil.copytree(source, moved)
    with pytest.raises(StoreError, match="mirrors"):
        run_index(tiny_encoder, moved, index_dir)
    report, enc = run_index(tiny_encoder, moved, index_dir, rebuild=True)
    assert report.count == 10 and enc.images_encoded == 10
    store = IndexStore.open(index_dir)
    assert all(row.path.startswith(str(moved.resolve())) for row in store.iter_items())
    assert store.manifest.source == str(moved.resolve())
    check_store_invariants(index_dir)


def test_rebuild_keeps_the_ids_of_unchanged_keys(indexed, other_encoder):
    source, index_dir, _ = indexed
    before = key_ids(index_dir)
    run_index(other_encoder, source, index_dir, rebuild=True)
    assert key_ids(index_dir) == before


# ------------------------------------------------------------------------------ JSONL manifests
def _write_manifest(root: Path) -> Path:
    pics = root / "pics"
    pics.mkdir(parents=True)
    rng = np.random.default_rng(3)
    random_image(rng).save(pics / "a.png")
    random_image(rng).save(pics / "b.jpg")
    lines = [
        json.dumps({"path": "pics/a.png", "caption": ["a red thing", "something crimson"], "split": "train"}),
        json.dumps({"path": "pics/b.jpg", "id": "bee", "caption": "a blue thing", "split": "val", "scene": {"n": 2}}),
        "{this is not json",
        json.dumps({"path": "pics/missing.png", "caption": "gone"}),
        "",
        json.dumps({"caption": "no path at all"}),
        json.dumps({"path": "pics/a.png", "id": "bee", "caption": "duplicate id"}),
    ]
    manifest = root / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_jsonl_manifest_source(tmp_path, tiny_encoder, monkeypatch):
    manifest = _write_manifest(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths are relative to the manifest, not the cwd
    report, enc = run_index(tiny_encoder, manifest, tmp_path / "index")
    assert report.count == 2 and enc.images_encoded == 2
    skipped = dict(report.skipped)
    assert skipped["manifest.jsonl:3"].startswith("bad JSON")
    assert skipped["manifest.jsonl:4"].startswith("missing file")
    assert "path" in skipped["manifest.jsonl:6"]
    assert "duplicate" in skipped["manifest.jsonl:7"]
    assert len(report.skipped) == 4

    items = {row.key: row for row in IndexStore.open(tmp_path / "index").iter_items()}
    assert set(items) == {"pics/a.png", "bee"}
    assert items["pics/a.png"].path == str((tmp_path / "data" / "pics" / "a.png").resolve())
    assert items["pics/a.png"].metadata["split"] == "train"
    assert items["pics/a.png"].text == "a red thing"
    assert items["bee"].metadata["scene"] == {"n": 2} and items["bee"].metadata["split"] == "val"
    assert items["bee"].path.endswith("pics/b.jpg")
    check_store_invariants(tmp_path / "index")


def test_jsonl_metadata_change_updates_without_embedding(tmp_path, tiny_encoder):
    manifest = _write_manifest(tmp_path / "data")
    run_index(tiny_encoder, manifest, tmp_path / "index")
    lines = manifest.read_text().splitlines()
    lines[0] = lines[0].replace('"train"', '"test"')
    manifest.write_text("\n".join(lines) + "\n")
    report, enc = run_index(tiny_encoder, manifest, tmp_path / "index")
    assert enc.embedded == 0 and report.metadata_updated == 1
    items = {row.key: row for row in IndexStore.open(tmp_path / "index").iter_items()}
    assert items["pics/a.png"].metadata["split"] == "test"


# ------------------------------------------------------------------------------ text modality
def test_text_modality_indexes_captions_and_is_searchable_with_an_image(tmp_path, tiny_encoder):
    manifest = _write_manifest(tmp_path / "data")
    index_dir = tmp_path / "captions"
    report, enc = run_index(tiny_encoder, manifest, index_dir, modality="text")
    # Captions are indexed as text even where the image file is missing (line 4): the text is the item.
    assert report.count == 4 and enc.texts_encoded == 4 and enc.images_encoded == 0
    store = IndexStore.open(index_dir)
    assert store.manifest.modality == "text"
    items = {row.key: row for row in store.iter_items()}
    assert set(items) == {"pics/a.png#0", "pics/a.png#1", "bee#0", "pics/missing.png#0"}
    assert items["bee#0"].text == "a blue thing" and items["bee#0"].metadata["image_id"] == "bee"
    # The stored vectors are the captions' text embeddings.
    ids, vectors = store.vectors()
    by_id = dict(zip(ids.tolist(), vectors, strict=True))
    np.testing.assert_allclose(by_id[items["bee#0"].id], tiny_encoder.encode_texts(["a blue thing"])[0], atol=1e-5)

    searcher = Searcher(store, tiny_encoder)
    result = searcher.search(image=tmp_path / "data" / "pics" / "a.png", k=10)
    assert len(result.hits) == 4
    assert {h.text for h in result.hits} == {"a red thing", "something crimson", "a blue thing", "gone"}
    expected = tiny_encoder.encode_images([__import__("PIL.Image").Image.open(tmp_path / "data/pics/a.png")])
    scores = [float(by_id[h.id] @ expected[0]) for h in result.hits]
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_allclose([h.score for h in result.hits], scores, atol=1e-5)

    # Re-run: nothing embedded; a changed caption: only it, with the same id.
    again, enc = run_index(tiny_encoder, manifest, index_dir, modality="text")
    assert enc.embedded == 0 and again.count == 4
    manifest.write_text(manifest.read_text().replace("a blue thing", "a navy thing"))
    changed, enc = run_index(tiny_encoder, manifest, index_dir, modality="text")
    assert enc.texts_encoded == 1 and changed.reembedded == 1
    assert key_ids(index_dir)["bee#0"] == items["bee#0"].id
    check_store_invariants(index_dir)


def test_text_modality_needs_a_manifest_and_cannot_mix_with_images(tmp_path, make_images, tiny_encoder):
    make_images(2)
    with pytest.raises(SourceError, match="JSONL"):
        run_index(tiny_encoder, tmp_path / "images", tmp_path / "t", modality="text")
    manifest = _write_manifest(tmp_path / "data")
    run_index(tiny_encoder, manifest, tmp_path / "index")
    with pytest.raises(StoreError, match="image embeddings"):
        run_index(tiny_encoder, manifest, tmp_path / "index", modality="text")


# ------------------------------------------------------------------------------ interrupted runs
class CrashingEncoder(CountingEncoder):
    """Raises on its ``crash_on``-th image batch, like a run interrupted after a checkpoint."""

    def __init__(self, inner, crash_on: int) -> None:
        super().__init__(inner)
        self.crash_on = crash_on

    def encode_image_tensors(self, pixels):  # type: ignore[no-untyped-def]
        if self.image_calls + 1 == self.crash_on:
            raise RuntimeError("simulated crash")
        return super().encode_image_tensors(pixels)


def _interrupted_run(tiny_encoder, source, index_dir):
    """Index with batches of 4, checkpointing each, and crash on the second batch."""
    crashing = CrashingEncoder(tiny_encoder, crash_on=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        Indexer(crashing, tiny_index_config(batch_size=4, checkpoint_every=4), progress=False).run(source, index_dir)


def test_run_interrupted_by_an_exception_resumes(tmp_path, make_images, tiny_encoder):
    source, index_dir = tmp_path / "images", tmp_path / "index"
    make_images(12)
    _interrupted_run(tiny_encoder, source, index_dir)  # batch 1 (4 images) checkpointed, then the crash
    with ro_connect(index_dir) as db:
        assert db.execute("SELECT COUNT(*) FROM pending").fetchone()[0] == 4
    assert len(IndexStore.open(index_dir)) == 0  # nothing committed
    report, enc = run_index(tiny_encoder, source, index_dir, batch_size=4, checkpoint_every=4)
    assert report.resumed == 4 and enc.images_encoded == 8 and report.count == 12
    check_store_invariants(index_dir)


def test_resumed_run_still_reports_files_that_failed_before_the_interruption(tmp_path, make_images, tiny_encoder):
    source, index_dir = tmp_path / "images", tmp_path / "index"
    make_images(12)
    broken = write_corrupt_files(source)  # "broken_*" sort first: they fail in the checkpointed batch
    _interrupted_run(tiny_encoder, source, index_dir)
    report, _ = run_index(tiny_encoder, source, index_dir, batch_size=4, checkpoint_every=4)
    assert report.count == 12
    assert {where for where, _ in report.skipped} == {str(p) for p in broken.values()}
    assert report.resumed == 1  # one image was embedded before the crash; the failures are not "reused"


def test_file_that_becomes_corrupt_leaves_the_index(indexed, tiny_encoder):
    source, index_dir, _ = indexed
    target = source / "img0006.png"
    old_id = key_ids(index_dir)["img0006.png"]
    target.write_bytes(b"garbage now")
    random_image(np.random.default_rng(4)).save(source / "new.png")
    report, _ = run_index(tiny_encoder, source, index_dir)
    assert report.count == 10
    # The failed re-embedding is neither "re-embedded" nor "added": the old item is dropped, and says so.
    assert (report.added, report.reembedded, report.dropped, report.removed, report.unchanged) == (1, 0, 1, 0, 9)
    assert dict(report.skipped)[str(target)].startswith("not an image")
    store = IndexStore.open(index_dir)
    assert old_id not in faiss_ids(store.index).tolist()
    assert "img0006.png" not in key_ids(index_dir)
    check_store_invariants(index_dir)


def test_unusual_file_names(tmp_path, tiny_encoder):
    source = tmp_path / "src"
    source.mkdir()
    rng = np.random.default_rng(0)
    names = ["café ü.png", "UPPER.JPG", "with space.jpeg", "dots.in.name.webp", "über/ß.bmp"]
    for name in names:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        random_image(rng).save(source / name)
    report, _ = run_index(tiny_encoder, source, tmp_path / "index")
    assert report.count == 5 and not report.skipped
    assert set(key_ids(tmp_path / "index")) == set(names)
    again, enc = run_index(tiny_encoder, source, tmp_path / "index")
    assert enc.embedded == 0


# ------------------------------------------------------------------------------ counters
def test_removed_counts_only_indexed_items_gone_from_the_source(tmp_path, make_images, tiny_encoder):
    source, index_dir = tmp_path / "images", tmp_path / "index"
    make_images(6)
    broken = write_corrupt_files(source)
    run_index(tiny_encoder, source, index_dir)
    broken["empty"].unlink()
    broken["text"].unlink()
    (source / "img0001.jpg").unlink()
    report, enc = run_index(tiny_encoder, source, index_dir)
    assert report.removed == 1 and report.count == 5 and enc.embedded == 0
    assert {where for where, _ in report.skipped} == {str(broken["truncated"])}
    with ro_connect(index_dir) as db:
        assert {k for (k,) in db.execute("SELECT key FROM skipped")} == {"broken_truncated.jpg"}


def test_failed_reembed_resumed_after_an_interruption_is_dropped(indexed, tiny_encoder):
    source, index_dir, _ = indexed
    (source / "img0000.png").write_bytes(b"garbage now")  # sorts first: fails in the checkpointed batch
    for i in range(5):
        random_image(np.random.default_rng(50 + i)).save(source / f"z{i}.png")
    _interrupted_run(tiny_encoder, source, index_dir)
    report, enc = run_index(tiny_encoder, source, index_dir, batch_size=4, checkpoint_every=4)
    assert (report.resumed, report.added, report.dropped, report.reembedded) == (3, 2, 1, 0)
    assert enc.images_encoded == 2 and report.count == 14
    assert "img0000.png" not in check_store_invariants(index_dir)


def test_rebuild_counts_reembedded_and_removed_items(indexed, other_encoder):
    source, index_dir, _ = indexed
    (source / "img0003.jpg").unlink()
    random_image(np.random.default_rng(6)).save(source / "new.png")
    report, enc = run_index(other_encoder, source, index_dir, rebuild=True)
    assert (report.reembedded, report.added, report.removed, report.count) == (9, 1, 1, 10)
    assert enc.images_encoded == 10


# ------------------------------------------------------------------------------ training-size pre-check
PQ16 = "PQ4x4"  # trains on at least 2**4 = 16 vectors


def test_deleting_skipped_files_does_not_refuse_a_trainable_run(tmp_path, make_images, tiny_encoder):
    source, index_dir = tmp_path / "images", tmp_path / "index"
    make_images(16)
    broken = write_corrupt_files(source)
    run_index(tiny_encoder, source, index_dir, factory=PQ16)
    for path in broken.values():
        path.unlink()
    random_image(np.random.default_rng(3)).save(source / "img0004.png")  # a re-embedding too
    report, enc = run_index(tiny_encoder, source, index_dir, factory=PQ16)
    assert report.count == 16 and report.removed == 0 and report.reembedded == 1 and enc.images_encoded == 1
    check_store_invariants(index_dir)


def test_trained_index_may_shrink_in_place_below_its_training_size(tmp_path, make_images, tiny_encoder):
    source, index_dir = tmp_path / "images", tmp_path / "index"
    make_images(16)
    run_index(tiny_encoder, source, index_dir, factory=PQ16)
    (source / "img0007.jpg").unlink()
    report, _ = run_index(tiny_encoder, source, index_dir, factory=PQ16)
    assert report.count == 15 and report.removed == 1
    assert IndexStore.open(index_dir).manifest.faiss_spec == PQ16
    check_store_invariants(index_dir)


def test_rebuild_into_an_untrainable_factory_is_refused_before_embedding(indexed, tiny_encoder):
    source, index_dir, _ = indexed  # 10 items: the rebuilt collection holds 10, not 10 + 10
    with pytest.raises(IndexBuildError, match="at least 16"):
        run_index(tiny_encoder, source, index_dir, factory=PQ16, rebuild=True, counting=(enc := []))
    assert enc[0].embedded == 0


def test_factory_change_with_reembeds_is_refused_before_embedding(tmp_path, make_images, tiny_encoder):
    source, index_dir = tmp_path / "images", tmp_path / "index"
    make_images(15)
    run_index(tiny_encoder, source, index_dir)
    random_image(np.random.default_rng(8)).save(source / "img0002.png")  # re-embedded: still 15 items, not 16
    with pytest.raises(IndexBuildError, match="at least 16"):
        run_index(tiny_encoder, source, index_dir, factory=PQ16, counting=(enc := []))
    assert enc[0].embedded == 0
    assert IndexStore.open(index_dir).manifest.faiss_spec == "Flat"


def test_checkpoint_of_a_file_reverted_since_is_not_committed(indexed, tiny_encoder):
    """An interrupted run embedded a changed file; the change was undone before the next run."""
    source, index_dir, _ = indexed
    target = source / "img0000.png"
    original, (_, _, mtime, _, old_vec) = target.read_bytes(), stored_row(index_dir, "img0000.png")
    for i in range(5):  # img0000 .. img0004 change: a checkpointed batch of 4, then the crash
        random_image(np.random.default_rng(60 + i)).save(source / f"img{i:04d}{'.png' if i % 2 == 0 else '.jpg'}")
    _interrupted_run(tiny_encoder, source, index_dir)
    target.write_bytes(original)
    os.utime(target, ns=(mtime, mtime))
    report, enc = run_index(tiny_encoder, source, index_dir, batch_size=4, checkpoint_every=4)
    assert stored_row(index_dir, "img0000.png")[4] == old_vec  # not the checkpointed vector of the undone change
    assert (report.unchanged, report.resumed, report.reembedded) == (6, 3, 1) and enc.images_encoded == 1
    check_store_invariants(index_dir)
