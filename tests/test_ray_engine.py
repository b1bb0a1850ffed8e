"""The ray engine: Ray Data on a local Ray (2 CPUs) gives the same index as the local engine, keeps the
store's guarantees (incremental, resumable, bad files skipped with reasons), and says what is wrong
when Ray is missing."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from helpers import check_store_invariants, ro_connect, tiny_index_config, write_corrupt_files

from viewfinder.pipeline.store.index_store import IndexStore
from viewfinder.pipeline.store.indexer import Indexer

pytestmark = pytest.mark.usefixtures("local_ray")


def run(encoder, source, index_dir, engine, **kwargs):
    modality = kwargs.pop("modality", "image")
    config = tiny_index_config(engine=engine, batch_size=4, num_workers=0, **kwargs)
    return Indexer(encoder, config, progress=False).run(source, index_dir, modality=modality)


def stored(index_dir):
    """key -> (id, sha256, vector) of the committed items."""
    with ro_connect(index_dir) as db:
        rows = db.execute("SELECT key, id, sha256, vector FROM items").fetchall()
    return {key: (i, sha, np.frombuffer(v, np.float32)) for key, i, sha, v in rows}


def assert_same_index(a, b, *, same_ids=True):
    """Same keys, hashes and vectors (and ids, for runs with the same history)."""
    left, right = stored(a), stored(b)
    assert set(left) == set(right)
    for key, (i, sha, vec) in left.items():
        assert right[key][1] == sha, key
        assert right[key][0] == i or not same_ids, key
        np.testing.assert_allclose(right[key][2], vec, atol=1e-5)
    ids_a, ids_b = check_store_invariants(a), check_store_invariants(b)
    assert ids_a == ids_b or not same_ids


def test_ray_and_local_engines_give_the_same_ids_vectors_and_skips(tmp_path, make_images, tiny_encoder):
    source = tmp_path / "images"
    make_images(11)
    write_corrupt_files(source)
    local = run(tiny_encoder, source, tmp_path / "local", "local")
    on_ray = run(tiny_encoder, source, tmp_path / "ray", "ray")
    assert (on_ray.added, on_ray.count) == (local.added, local.count) == (11, 11)
    assert sorted(on_ray.skipped) == sorted(local.skipped) and local.skipped
    assert_same_index(tmp_path / "local", tmp_path / "ray")


def test_a_ray_rerun_embeds_nothing_and_an_addition_only_the_new_file(tmp_path, make_images, tiny_encoder):
    source = tmp_path / "images"
    make_images(6)
    run(tiny_encoder, source, tmp_path / "index", "ray")
    again = run(tiny_encoder, source, tmp_path / "index", "ray")
    assert (again.added, again.unchanged, again.count) == (0, 6, 6)
    make_images(1, prefix="new", seed=9)
    more = run(tiny_encoder, source, tmp_path / "index", "ray")
    assert (more.added, more.unchanged, more.count) == (1, 6, 7)
    run(tiny_encoder, source, tmp_path / "local", "local")
    assert_same_index(tmp_path / "local", tmp_path / "index")


def test_a_ray_run_killed_after_a_checkpoint_resumes_without_embedding_twice(
    tmp_path, make_images, tiny_encoder, monkeypatch
):
    source = tmp_path / "images"
    make_images(12)
    calls = []
    real = IndexStore.add_pending

    def add_then_die(self, rows):
        real(self, rows)
        calls.append(len(rows))
        raise KeyboardInterrupt  # the process dies right after its first checkpoint

    monkeypatch.setattr(IndexStore, "add_pending", add_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_encoder, source, tmp_path / "index", "ray", checkpoint_every=4)
    monkeypatch.setattr(IndexStore, "add_pending", real)
    assert not (tmp_path / "index" / "index.1.faiss").exists()  # nothing committed
    done = run(tiny_encoder, source, tmp_path / "index", "ray", checkpoint_every=4)
    assert done.resumed == calls[0] == 4 and done.added == 8 and done.count == 12
    run(tiny_encoder, source, tmp_path / "local", "local")
    assert_same_index(tmp_path / "local", tmp_path / "index", same_ids=False)  # a resume numbers the rest anew


def test_ray_embeds_a_manifest_s_captions_like_the_local_engine(tmp_path, tiny_encoder):
    manifest = tmp_path / "captions.jsonl"
    lines = [{"id": f"t{i}", "caption": f"a caption number {i}"} for i in range(9)]
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    run(tiny_encoder, manifest, tmp_path / "local", "local", modality="text")
    run(tiny_encoder, manifest, tmp_path / "ray", "ray", modality="text")
    assert_same_index(tmp_path / "local", tmp_path / "ray")


def test_without_ray_the_engine_says_how_to_install_it(tmp_path, make_images, tiny_encoder, monkeypatch):
    from viewfinder.pipeline.store.ray_engine import RayEngineError

    make_images(2)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RayEngineError, match=r"pip install 'viewfinder\[ray\]'"):
        run(tiny_encoder, tmp_path / "images", tmp_path / "index", "ray")
    assert not IndexStore.exists(tmp_path / "index") or IndexStore.open(tmp_path / "index").manifest.count == 0


def test_the_cli_refuses_ray_options_without_the_ray_engine(tmp_path, make_images):
    from typer.testing import CliRunner

    from viewfinder.pipeline.cli import app

    make_images(2)
    base = ["index", str(tmp_path / "images"), "--index", str(tmp_path / "index"), "-c", "tiny"]
    lone = CliRunner().invoke(app, [*base, "--address", "auto"])
    assert lone.exit_code == 2 and "need --engine ray" in lone.output
    odd = CliRunner().invoke(app, [*base, "--engine", "spark"])
    assert odd.exit_code == 2 and "'local' or 'ray'" in odd.output
    assert not (tmp_path / "index").exists()
