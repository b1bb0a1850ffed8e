"""One check of a query's shape (exactly one of a text or an image, k >= 1) for every entry point."""

from __future__ import annotations

import pytest
from helpers import write_images

from viewfinder.pipeline import Pipeline, build_index
from viewfinder.pipeline.stages.presets import open_searcher
from viewfinder.pipeline.store.search import QueryError


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("query-check")
    write_images(root / "images", 6, seed=3)
    build_index(root / "images", root / "index", preset="tiny", progress=False)
    return root / "index"


@pytest.mark.parametrize(
    ("text", "image", "k", "message"),
    [
        (None, None, 5, "exactly one of a text query or an image"),
        ("a red star", "x.png", 5, "exactly one of a text query or an image"),
        ("a red star", None, 0, "k must be an integer >= 1"),
        ("a red star", None, True, "k must be an integer >= 1"),  # a bool is not a count
        ("a red star", None, "3", "k must be an integer >= 1"),
    ],
)
def test_the_searcher_and_the_pipeline_refuse_the_same_queries_alike(index, text, image, k, message):
    searcher, pipeline = open_searcher(index, "tiny"), Pipeline.from_preset("tiny", index=index)
    with pytest.raises(QueryError, match=message) as plain:
        searcher.search(text, image=image, k=k)
    with pytest.raises(QueryError, match=message) as staged:
        pipeline.search(text, image=image, k=k)
    assert str(staged.value).startswith(str(plain.value).split(" (")[0])
