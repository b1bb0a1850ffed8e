"""The benchmarks on tiny settings: their figures are well-formed (no wall-clock assertions)."""

from __future__ import annotations

import json
import math
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from viewfinder.pipeline.bench.data import Mixture, clustered_vectors, make_bench_images, parse_size  # noqa: E402
from viewfinder.pipeline.bench.index import bench_index  # noqa: E402
from viewfinder.pipeline.bench.search import bench_search  # noqa: E402
from viewfinder.pipeline.cli.bench import bench_app  # noqa: E402


@pytest.fixture(scope="module")
def search_run():
    """Flat and the auto-sized IVF preset over 2000 clustered 32-d vectors."""
    return bench_search(dim=32, sizes=(2000,), queries=50, k=10, factories=("Flat", "IVF"), clusters=20)


def test_index_bench_figures(tiny_encoder):
    result = bench_index(tiny_encoder, n=16, batch_size=8, workers=1, image_size=(64, 48), repeats=2)
    assert result.model == tiny_encoder.name
    assert (result.images, result.batch_size, result.workers) == (16, 8, 1)
    assert result.forward_images_per_second > 0 and result.full_images_per_second > 0
    assert result.embed_loop_images_per_second > 0
    assert result.ratio == pytest.approx(result.full_images_per_second / result.forward_images_per_second)
    assert result.forward_images_per_second == pytest.approx(16 / result.forward_seconds)
    assert result.full_images_per_second == pytest.approx(16 / result.full_seconds)
    assert 0 < result.overlap_bound <= 1
    assert result.decode_ms_per_image > 0 and result.jpeg_kb > 0
    assert result.forward_spread >= 0 and result.torch_threads >= 1 and result.cpu_cores >= 1
    assert len(result.forward_runs) == 3 and len(result.full_runs) == 2  # forward, full, forward, full, forward
    assert result.forward_seconds == min(result.forward_runs) and result.full_seconds == min(result.full_runs)


def test_index_comparison_runs_every_model_in_one_run_against_the_first(tmp_path):
    rn = tmp_path / "tiny-rn.yaml"  # a conv tower beside the tiny ViT, as old against new encoder
    rn.write_text("family: open_clip\narch: tiny-test-rn\nweights: random\nseed: 0\n", encoding="utf-8")
    out = tmp_path / "compare.json"
    args = ["index", "--model", "tiny-test", "--model", str(rn), "--n", "4", "--batch-size", "4", "--workers", "0",
            "--image-size", "32x32", "--repeats", "2", "--json", str(out)]  # fmt: skip
    result = CliRunner().invoke(bench_app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["rounds"] == 2 and len(report["models"]) == 2 and report["models"][0] == "tiny-test"
    first, second = (report["results"][m] for m in report["models"])
    assert report["full_vs_first"]["tiny-test"] == 1.0
    ratio = second["full_images_per_second"] / first["full_images_per_second"]
    assert report["full_vs_first"][report["models"][1]] == pytest.approx(ratio)
    assert len(first["full_runs"]) == 1 and "machine" in report  # each round is one full run per model


def test_index_bench_restores_torch_threads(tiny_encoder):
    import torch

    before = torch.get_num_threads()
    result = bench_index(tiny_encoder, n=4, batch_size=4, workers=0, image_size=(32, 32), threads=1)
    assert result.torch_threads == 1 and result.workers == 0
    assert torch.get_num_threads() == before


def test_search_bench_figures(search_run):
    assert search_run.dim == 32 and search_run.queries == 50 and search_run.k == 10
    by_factory = {r.factory: r for r in search_run.results}
    assert set(by_factory) == {"Flat", "IVF"}
    flat, ivf = by_factory["Flat"], by_factory["IVF"]
    assert flat.spec == "Flat" and flat.nprobe is None and flat.train_vectors == 0
    assert flat.recall == 1.0
    assert ivf.spec == "IVF51,Flat"  # min(4·sqrt(2000), 2000 // 39) lists
    assert ivf.tuned_recall is not None and ivf.tuned_recall >= 0.99  # nprobe tuned as the store tunes it
    assert 1 <= ivf.nprobe <= 51 and ivf.train_vectors == 2000 and ivf.ram_mb > 0
    for r in search_run.results:
        assert r.n == 2000 and r.dim == 32 and r.k == 10
        assert 0.0 <= r.recall <= 1.0
        assert r.build_seconds > 0 and r.batch_queries_per_second > 0
        assert r.single_queries == r.batch_queries == 50
        assert 0 < r.p50_ms <= r.p95_ms
        assert r.index_mb >= 2000 * 32 * 4 / 1e6  # at least the raw vectors (IVF,Flat and Flat store them)


def test_search_bench_options():
    run = bench_search(
        dim=16, sizes=(1500,), queries=20, k=5, factories=("IVF",), nprobe=3, single_queries=7, train_sample=1000
    )
    (r,) = run.results
    assert r.nprobe == 3 and r.single_queries == 7 and r.batch_queries == 20
    assert r.train_vectors == 1000  # trained on a sample, all 1500 added
    assert r.index_mb >= 1500 * 16 * 4 / 1e6
    assert 0.0 <= r.recall <= 1.0


def test_clustered_vectors_are_unit_and_seeded():
    mixture = Mixture.random(dim=8, clusters=5, rank=16, seed=3)
    assert mixture.basis.shape == (8, 8) and mixture.centers.shape == (5, 8)  # rank capped at dim
    a = clustered_vectors(300, mixture, np.random.default_rng(1), chunk=64)
    b = clustered_vectors(300, Mixture.random(dim=8, clusters=5, rank=16, seed=3), np.random.default_rng(1), chunk=64)
    assert a.shape == (300, 8) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(a, b)


def test_bench_images_are_jpegs(tmp_path):
    from PIL import Image

    paths = make_bench_images(tmp_path, 3, (40, 30), seed=1)
    assert len(paths) == 3
    with Image.open(paths[0]) as im:
        assert im.format == "JPEG" and im.size == (40, 30)


def test_parse_size():
    assert parse_size("320x240") == (320, 240)
    assert parse_size(" 64X48 ") == (64, 48)
    for bad in ("320", "0x10", "axb", "320x240x3"):
        with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
            parse_size(bad)


def test_search_command_writes_json(tmp_path):
    out = tmp_path / "search.json"
    args = ["search", "--dim", "8", "--sizes", "400", "--queries", "10", "--factories", "Flat", "--json", str(out)]
    result = CliRunner().invoke(bench_app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    (row,) = data["results"]
    assert row["spec"] == "Flat" and row["recall"] == 1.0 and row["n"] == 400
    assert "recall@10" in result.output


def test_index_command_writes_json(tmp_path):
    out = tmp_path / "index.json"
    args = ["index", "--model", "tiny-test", "--n", "4", "--batch-size", "2", "--workers", "0"]
    result = CliRunner().invoke(bench_app, [*args, "--image-size", "32x24", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["images"] == 4 and data["image_size"] == [32, 24]
    assert math.isclose(data["ratio"], data["full_images_per_second"] / data["forward_images_per_second"])


def test_commands_reject_bad_options():
    runner = CliRunner()
    assert runner.invoke(bench_app, ["index", "--image-size", "big"]).exit_code == 2
    assert runner.invoke(bench_app, ["search", "--sizes", "a,b"]).exit_code == 2
    assert runner.invoke(bench_app, ["search", "--factories", ","]).exit_code == 2
    assert runner.invoke(bench_app, ["index", "--model", "no-such-model"]).exit_code == 2
    bad_factory = runner.invoke(bench_app, ["search", "--dim", "8", "--sizes", "100", "--factories", "NoSuchIndex"])
    assert bad_factory.exit_code == 2


def test_ivf_lists_parses_factory_strings():
    from viewfinder.pipeline.store.faiss_index import ivf_lists, same_family, training_vectors

    assert ivf_lists("IVF51,Flat") == 51 and ivf_lists("OPQ16,IVF256,PQ16") == 256
    assert ivf_lists("Flat") == 0 and ivf_lists("HNSW32,Flat") == 0
    assert training_vectors("IVF4,Flat", 1000) == 256 and training_vectors("IVF4,Flat", 100) == 100
    assert training_vectors("PQ8x8", 1000) == 1000
    assert same_family("IVF50,Flat", "IVF90,Flat") and not same_family("IVF50,Flat", "IVF50,PQ8x8")


def test_search_bench_reports_what_build_index_trains_on():
    # build_index trains IVF on 64 vectors per list: 256 of the 1000 here, by default as when asked for
    # more; only a smaller sample changes it.
    runs = {
        sample: bench_search(dim=8, sizes=(1000,), queries=5, k=2, factories=("IVF4,Flat",), train_sample=sample)
        for sample in (None, 0, 600, 100)
    }
    trained = {sample: run.results[0].train_vectors for sample, run in runs.items()}
    assert trained == {None: 256, 0: 256, 600: 256, 100: 100}


def test_inner_index_unwraps_the_id_map_and_ivf_keeps_its_own_ids():
    import faiss

    from viewfinder.pipeline.bench.search import _nprobe_of
    from viewfinder.pipeline.store.faiss_index import build_index, inner_index, set_search_params, supports_removal

    vectors = clustered_vectors(300, Mixture.random(dim=8, clusters=4, rank=8, seed=0), np.random.default_rng(0))
    index = build_index("IVF4,Flat", vectors, np.arange(300, dtype=np.int64))
    assert isinstance(index, faiss.IndexIVFFlat) and isinstance(inner_index(index), faiss.IndexIVFFlat)  # own ids
    set_search_params(index, 3, 16)
    assert _nprobe_of(index) == 3 and supports_removal(index)
    hnsw = build_index("HNSW8,Flat", vectors, np.arange(300, dtype=np.int64))
    assert isinstance(hnsw, faiss.IndexIDMap2)
    assert not supports_removal(hnsw) and _nprobe_of(hnsw) is None


def test_search_command_notes_a_train_sample_smaller_than_build_index_uses():
    # The IVF preset gives 25 lists for 1000 vectors: build_index trains on all 1000 (fewer than 64 per list).
    args = ["search", "--dim", "8", "--sizes", "1000", "--queries", "5", "--k", "2", "--factories", "IVF"]
    runner = CliRunner()
    sampled = runner.invoke(bench_app, [*args, "--train-sample", "100"])
    assert sampled.exit_code == 0, sampled.output
    (note,) = [line for line in sampled.stdout.splitlines() if line.startswith("note:")]
    assert "IVF25,Flat trained on 100 vectors" in note and "trains on 1,000 (at most 64 per IVF list)" in note
    default = runner.invoke(bench_app, args)
    assert default.exit_code == 0, default.output
    assert "note:" not in default.stdout
    assert "--train-sample 0" not in runner.invoke(bench_app, ["search", "--help"]).stdout
