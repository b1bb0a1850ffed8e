"""A prompt experiment that would measure nothing is an error, not a table of nan: an empty split, no
queries, or queries whose targets the index does not hold (another split than the index's)."""

from __future__ import annotations

import warnings

import pytest

from viewfinder import Error
from viewfinder.pipeline import build_index
from viewfinder.pipeline.eval.experiment import build_variants, partial_queries, run_experiment
from viewfinder.pipeline.scenes.dataset import ensure_scene_dataset
from viewfinder.pipeline.scenes.generator import SceneGeneratorConfig


@pytest.fixture(scope="module")
def scene_data(tmp_path_factory):
    """Val and test scenes; the index holds the test split only (as the demo's does)."""
    root = tmp_path_factory.mktemp("experiment")
    data = ensure_scene_dataset(
        root / "scenes", SceneGeneratorConfig(seed=9), n_train=0, n_val=6, n_test=10, n_compositional=0
    )
    build_index(data / "test.jsonl", root / "index", preset="tiny", progress=False)
    return data, root / "index"


def test_an_empty_split_is_an_error_that_names_the_splits_with_scenes(scene_data):
    data, _ = scene_data
    with pytest.raises(Error, match=r"split 'train' holds no scenes; the splits with scenes: \['test', 'val'\]"):
        partial_queries(data, "train", 5)
    with pytest.raises(Error, match="no split 'nope'"):
        partial_queries(data, "nope", 5)


def test_queries_of_another_split_than_the_index_holds_are_an_error(scene_data):
    data, index = scene_data
    variants = build_variants(["none"], index, captioner=None, preselect_k=10)
    queries, scenes = partial_queries(data, "val", 3)  # val scenes, an index of the test split
    with pytest.raises(Error, match="3 of the 3 query targets are not in the index.*another split"):
        run_experiment(variants, queries, scenes, rounds=1, k=5, progress=False)
    with pytest.raises(Error, match="no queries to run"):
        run_experiment(variants, [], scenes, rounds=1, k=5, progress=False)
    queries, scenes = partial_queries(data, "test", 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no numpy "mean of empty slice" either
        report = run_experiment(variants, queries, scenes, rounds=1, k=5, progress=False)
    assert report["n_queries"] == 3 and report["variants"]["none"]["per_round"][0]["median_rank"] is not None
