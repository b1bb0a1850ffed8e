"""Generated bad input, a small seeded sample of each (the full runs are `viewfinder bench fuzz-images`
and `viewfinder bench fuzz-queries`): mutated image files through the indexer, generated queries
through the Python API and the CLI, and a per-image time limit that stops a slow decode."""

from __future__ import annotations

import time

import pytest
from helpers import tiny_index_config, write_images
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import viewfinder
from viewfinder.pipeline.bench.fuzz import MUTATIONS, fuzz_cli, fuzz_images, fuzz_python
from viewfinder.pipeline.store.indexer import Indexer


def test_mutated_images_of_every_format_are_indexed_or_skipped_never_abort(tmp_path, tiny_encoder):
    report = fuzz_images(tiny_encoder, tmp_path, n=2 * 5 * len(MUTATIONS), seed=3, workers=0, time_limit=10)
    assert report.aborts == 0, report.abort_detail
    assert report.hangs == 0 and report.indexed + report.skipped == report.files
    assert set(report.by_mutation) == set(MUTATIONS) and report.skipped > 0 and report.indexed > 0


def test_a_decode_over_the_time_limit_is_skipped_with_its_reason(tmp_path, make_images, tiny_encoder, monkeypatch):
    import viewfinder.pipeline.store.decode as decode

    make_images(3)
    real = decode.decode_image

    def slow_for_one(data, max_pixels):
        if len(data) == len((tmp_path / "images" / "img0001.jpg").read_bytes()):
            time.sleep(5)  # a decoder stuck on a crafted file
        return real(data, max_pixels)

    monkeypatch.setattr(decode, "decode_image", slow_for_one)
    start = time.monotonic()
    config = tiny_index_config(num_workers=0, decode_timeout=0.3)
    report = Indexer(tiny_encoder, config, progress=False).run(tmp_path / "images", tmp_path / "index")
    assert time.monotonic() - start < 4.5
    assert report.count == 2 and [reason for _, reason in report.skipped] == [
        "too slow: took longer than 0.3 s (index.decode_timeout)"
    ]


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    from viewfinder.pipeline import Pipeline, build_index

    root = tmp_path_factory.mktemp("fuzz")
    write_images(root / "images", 12)
    build_index(root / "images", root / "index", preset="tiny", progress=False)
    return Pipeline.from_preset("tiny", index=root / "index"), root / "index"


def test_generated_queries_through_the_python_api_never_crash(tiny_pipeline):
    report = fuzz_python(tiny_pipeline[0], n=300, seed=1)
    assert report.crashes == 0, report.crash_examples
    assert report.answered > 100 and report.refused > 0


def test_generated_queries_through_the_cli_never_crash(tiny_pipeline):
    from typer.testing import CliRunner

    from viewfinder.pipeline.cli import app

    runner = CliRunner()
    report = fuzz_cli(lambda args: runner.invoke(app, args), tiny_pipeline[1], "tiny", n=40, seed=2)
    assert report.crashes == 0, report.crash_examples
    assert report.answered > 0 and report.refused > 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.text(max_size=300), k=st.integers(min_value=-5, max_value=10**6))
def test_any_text_and_any_k_is_answered_or_refused_clearly(tiny_pipeline, query, k):
    try:
        result = tiny_pipeline[0].search(query, k=k)
    except viewfinder.Error:
        return
    assert len(result.hits) <= max(k, 0) or k <= 0
