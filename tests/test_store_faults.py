"""Faults the store must survive, injected deterministically: a kill at every step of a commit, a full
disk and an I/O error at each file operation, damaged files of every kind; and ``index --check`` /
``index --repair``."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import check_store_invariants, ro_connect, tiny_index_config, write_images
from typer.testing import CliRunner

from viewfinder.pipeline.cli import app
from viewfinder.pipeline.store.faults import ENV, POINTS
from viewfinder.pipeline.store.health import check_index, repair_index
from viewfinder.pipeline.store.index_store import IndexStore
from viewfinder.pipeline.store.indexer import Indexer
from viewfinder.pipeline.store.records import DiskWriteError, IndexDamagedError
from viewfinder.pipeline.store.search import Searcher

_RUN = textwrap.dedent(
    """
    import sys
    from dataclasses import replace
    from viewfinder.adapters.registry import load_encoder
    from viewfinder.pipeline.stages.presets import load_preset
    from viewfinder.pipeline.store.indexer import Indexer

    source, index_dir, factory = sys.argv[1], sys.argv[2], sys.argv[3]
    config = replace(load_preset("tiny").index, factory=factory, batch_size=4, checkpoint_every=4, num_workers=0)
    report = Indexer(load_encoder("tiny-test"), config, progress=False).run(source, index_dir)
    print("done", report.count, flush=True)
    """
)


def run_in_subprocess(source: Path, index_dir: Path, factory: str, fault: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop(ENV, None)
    if fault:
        env[ENV] = fault
    return subprocess.run(
        [sys.executable, "-c", _RUN, str(source), str(index_dir), factory],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def index(encoder, source, index_dir, **overrides):
    return Indexer(encoder, tiny_index_config(**overrides), progress=False).run(source, index_dir)


def keys(index_dir: Path) -> list[str]:
    with ro_connect(index_dir) as db:
        return sorted(k for (k,) in db.execute("SELECT key FROM items"))


@pytest.mark.slow  # two indexing subprocesses per commit step
def test_a_kill_at_every_step_of_a_commit_keeps_the_previous_generation(tmp_path):
    """For each fault point in turn: a run that adds files is killed there; the index opens as the
    previous generation (or the new one, past the commit point), searches, and the next run finishes
    with every file exactly once. The index re-scores from fp16 vectors (``IVFPQR``), so every file a
    commit writes is among the points; ``test_store.py`` kills exact indexes at random moments."""
    factory = "IVFPQR"
    run, pristine = tmp_path / "run", tmp_path / "pristine"
    source, index_dir = run / "images", run / "index"  # one path: the index records its source
    write_images(source, 260, seed=1)  # PQ trains on at least 256 vectors
    first = run_in_subprocess(source, index_dir, factory, None)
    assert first.returncode == 0, first.stderr[-2000:]
    before = check_store_invariants(index_dir)
    shutil.copytree(run, pristine)
    for point in POINTS:
        shutil.rmtree(run)
        shutil.copytree(pristine, run)
        write_images(source, 12, seed=2, prefix="new")
        killed = run_in_subprocess(source, index_dir, factory, f"crash:{point}")
        assert killed.returncode == -signal.SIGKILL, (point, killed.stdout, killed.stderr[-2000:])
        after_kill = check_store_invariants(index_dir, check_manifest_file=point not in ("sqlite-committed",))
        committed = point == "sqlite-committed"  # json-renamed fires first where the writer opens the index
        assert len(after_kill) == len(before) + (12 if committed else 0), point
        assert set(before) <= set(after_kill)
        store = IndexStore.open(index_dir)
        store.configure_search(0, 64)
        _, found = store.search_vectors(store.vectors_by_id([next(iter(after_kill.values()))]), 5)
        assert (found[0] >= 0).all(), point
        store.close()
        finished = run_in_subprocess(source, index_dir, factory, None)
        assert finished.returncode == 0, (point, finished.stderr[-2000:])
        final = check_store_invariants(index_dir)
        assert len(final) == 272 and keys(index_dir) == sorted(p.name for p in source.iterdir()), point
        assert check_index(index_dir).ok, point


@pytest.mark.parametrize("kind", ["enospc", "eio"])
@pytest.mark.parametrize("point", ["pending-written", "faiss-written", "faiss-fsynced", "json-renamed"])
def test_a_full_disk_or_an_io_error_is_one_clear_error_and_loses_nothing(
    tmp_path, make_images, tiny_encoder, monkeypatch, kind, point
):
    make_images(6)
    index(tiny_encoder, tmp_path / "images", tmp_path / "index")
    make_images(3, prefix="more", seed=3)
    monkeypatch.setenv(ENV, f"{kind}:{point}")
    if point == "json-renamed":  # after the commit point: committed, with a warning
        report = index(tiny_encoder, tmp_path / "images", tmp_path / "index")
        assert report.count == 9
    else:
        with pytest.raises(DiskWriteError, match="Nothing of this run was committed") as caught:
            index(tiny_encoder, tmp_path / "images", tmp_path / "index")
        assert ("No space left" in str(caught.value)) == (kind == "enospc")
        assert len(check_store_invariants(tmp_path / "index")) == 6  # the previous generation, intact
    monkeypatch.delenv(ENV)
    again = index(tiny_encoder, tmp_path / "images", tmp_path / "index")
    assert again.count == 9 and len(check_store_invariants(tmp_path / "index")) == 9


@pytest.fixture
def built(tmp_path, make_images, tiny_encoder):
    make_images(8)
    index(tiny_encoder, tmp_path / "images", tmp_path / "index")
    return tmp_path / "images", tmp_path / "index"


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_faiss_file_is_named_checked_and_repaired(built, tiny_encoder):
    source, index_dir = built
    (faiss_file,) = index_dir.glob("index.*.faiss")
    truncate(faiss_file)
    with pytest.raises(IndexDamagedError, match=rf"{faiss_file.name} is damaged.*repair the index"):
        Searcher(IndexStore.open(index_dir), tiny_encoder).search("a query", k=3)
    with pytest.raises(IndexDamagedError):  # a re-run does not call it "unchanged"
        index(tiny_encoder, source, index_dir)
    runner = CliRunner()
    searched = runner.invoke(app, ["search", "a query", "--index", str(index_dir), "-c", "tiny"])
    assert searched.exit_code == 2 and "Traceback" not in searched.output and "--repair" in searched.output
    checked = runner.invoke(app, ["index", "--index", str(index_dir), "--check"])
    assert checked.exit_code == 1 and faiss_file.name in checked.output and "repairable" in checked.output
    repaired = runner.invoke(app, ["index", "--index", str(index_dir), "--repair"])
    assert repaired.exit_code == 0 and "rebuilt the FAISS index" in repaired.output
    assert check_index(index_dir).ok and len(check_store_invariants(index_dir)) == 8
    assert not faiss_file.exists()  # the damaged generation's file went with the repair's commit
    hits = Searcher(IndexStore.open(index_dir), tiny_encoder).search(image=source / "img0001.jpg", k=1).hits
    assert hits[0].key == "img0001.jpg"
    assert index(tiny_encoder, source, index_dir).unchanged == 8


def test_a_truncated_store_is_one_clear_error_and_a_rebuild_sets_it_aside(built, tiny_encoder):
    source, index_dir = built
    truncate(index_dir / "store.sqlite")
    with pytest.raises(IndexDamagedError, match="store.sqlite is damaged"):
        IndexStore.open(index_dir)
    with pytest.raises(IndexDamagedError, match="rebuilt from its source"):
        index(tiny_encoder, source, index_dir)
    report = check_index(index_dir)
    assert not report.ok and not report.problems[0].repairable
    with pytest.raises(IndexDamagedError):
        repair_index(index_dir)
    result = CliRunner().invoke(app, ["search", "a query", "--index", str(index_dir), "-c", "tiny"])
    assert result.exit_code == 2 and "Traceback" not in result.output and "--rebuild" in result.output
    rebuilt = Indexer(tiny_encoder, tiny_index_config(), progress=False).run(source, index_dir, rebuild=True)
    assert rebuilt.count == 8 and (index_dir / "store.sqlite.damaged").is_file()
    assert check_index(index_dir).ok


def test_a_corrupted_page_inside_the_store_is_found_by_check(built):
    _, index_dir = built
    db_file = index_dir / "store.sqlite"
    with sqlite3.connect(db_file) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(db_file.read_bytes())
    for offset in range(page_size * 2, len(data), page_size):  # scribble over every page's header but the first
        data[offset : offset + 16] = b"\xa5" * 16
    db_file.write_bytes(bytes(data))
    report = check_index(index_dir)
    assert not report.ok and report.problems[0].file == "store.sqlite" and not report.problems[0].repairable


def test_missing_refine_vectors_a_damaged_cache_and_a_stale_manifest_are_repaired(tmp_path, tiny_encoder):
    source, index_dir = tmp_path / "images", tmp_path / "index"
    write_images(source, 300, seed=4)
    index(tiny_encoder, source, index_dir, factory="IVFPQR")
    gen = IndexStore.open(index_dir).manifest.generation
    (index_dir / f"vectors.{gen}.f16.npy").unlink()
    (index_dir / "cache.sqlite").write_bytes(b"not a database at all" * 100)
    (index_dir / "manifest.json").write_text('{"generation": 0}')
    problems = {p.file for p in check_index(index_dir).problems}
    assert problems == {"vectors.*.npy", "cache.sqlite", "manifest.json"}
    done = repair_index(index_dir)
    assert len(done.actions) == 3 and done.generation == gen + 1
    assert check_index(index_dir).ok and (index_dir / "cache.sqlite.damaged").is_file()
    store = IndexStore.open(index_dir)
    store.configure_search(0, 64)
    ids, vectors = store.vectors()
    _, found = store.search_vectors(vectors[:5], 1)
    assert (found[:, 0] == ids[:5]).all()


def test_repair_of_a_healthy_index_changes_nothing(built):
    _, index_dir = built
    before = IndexStore.open(index_dir).manifest.generation
    done = repair_index(index_dir)
    assert done.actions == [] and done.generation == before
    assert np.array_equal(sorted(check_store_invariants(index_dir).values()), list(range(8)))
