"""Searching: query validation, truncation, k, image queries, typed results."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace

import numpy as np
import pytest

from viewfinder.pipeline.api import open_index
from viewfinder.pipeline.stages.presets import load_preset
from viewfinder.pipeline.store.index_store import IndexStore
from viewfinder.pipeline.store.indexer import Indexer
from viewfinder.pipeline.store.search import MAX_QUERY_CHARS, Hit, QueryError, Searcher, SearchResult, clean_query


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_encoder):
    """An index of 12 images (module-scoped: searching does not change it)."""
    from helpers import write_images

    root = tmp_path_factory.mktemp("search")
    paths = write_images(root / "images", 12, seed=5)
    config = replace(load_preset("tiny").index)
    Indexer(tiny_encoder, config, progress=False).run(root / "images", root / "index")
    return root, paths


@pytest.fixture
def searcher(indexed, tiny_encoder):
    root, _ = indexed
    store = IndexStore.open(root / "index")
    yield Searcher(store, tiny_encoder)
    store.close()


# ------------------------------------------------------------------------------ bad queries
@pytest.mark.parametrize("query", ["", " ", "   \t\n  ", "\u3000"])
def test_empty_and_whitespace_queries_are_errors(searcher, query):
    with pytest.raises(QueryError, match="empty"):
        searcher.search(query)


def test_huge_query_is_an_error(searcher):
    with pytest.raises(QueryError, match=str(MAX_QUERY_CHARS)):
        searcher.search("red " * (MAX_QUERY_CHARS // 2))
    # Right at the limit it is accepted (and truncated to the context).
    at_limit = ("x" * 9 + " ") * (MAX_QUERY_CHARS // 10)
    assert len(" ".join(at_limit.split())) <= MAX_QUERY_CHARS
    assert searcher.search(at_limit, k=1).truncated


def test_query_needs_exactly_one_of_text_or_image(searcher, indexed):
    _, paths = indexed
    with pytest.raises(QueryError, match="exactly one"):
        searcher.search()
    with pytest.raises(QueryError, match="exactly one"):
        searcher.search("red", image=paths[0])


@pytest.mark.parametrize("k", [0, -3])
def test_k_must_be_positive(searcher, k):
    with pytest.raises(QueryError, match="k"):
        searcher.search("red", k=k)


def test_non_string_query_is_an_error(tiny_encoder):
    with pytest.raises(QueryError, match="string"):
        clean_query(b"red", tiny_encoder)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ truncation
def test_over_long_query_is_truncated_and_flagged(searcher, tiny_encoder, caplog):
    words = " ".join(["red", "green", "blue"] * 10)  # 30 words > 16 tokens of context
    assert tiny_encoder.count_tokens(words) > tiny_encoder.context_length
    with caplog.at_level("WARNING"):
        result = searcher.search(words, k=3)
    assert result.truncated is True
    assert result.query == words
    assert len(result.hits) == 3
    assert any("tokens" in r.getMessage() for r in caplog.records)
    # The search uses the first context_length tokens: the same as searching the kept prefix.
    prefix = " ".join(words.split()[: tiny_encoder.context_length - 2])
    assert not searcher.search(prefix, k=3).truncated
    assert [h.id for h in searcher.search(prefix, k=12).hits] == [h.id for h in searcher.search(words, k=12).hits]


def test_short_query_is_not_truncated_and_whitespace_is_normalised(searcher):
    result = searcher.search("  a   red\tcircle \n", k=2)
    assert result.truncated is False
    assert result.query == "a red circle"


# ------------------------------------------------------------------------------ k, results
def test_k_larger_than_the_collection(searcher):
    result = searcher.search("a photo", k=1000)
    assert len(result.hits) == 12
    assert [h.rank for h in result.hits] == list(range(1, 13))
    assert len({h.id for h in result.hits}) == 12 and all(h.id >= 0 for h in result.hits)
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)


def test_results_are_typed_dataclasses(searcher, indexed):
    root, paths = indexed
    result = searcher.search("a red circle", k=4)
    assert isinstance(result, SearchResult) and dataclasses.is_dataclass(result)
    assert result.image is None and result.query == "a red circle"
    assert set(result.timings) == {"encode", "search", "lookup"}
    assert all(isinstance(v, float) and v >= 0 for v in result.timings.values())
    assert len(result.hits) == 4
    for hit in result.hits:
        assert isinstance(hit, Hit) and dataclasses.is_dataclass(hit)
        assert isinstance(hit.rank, int) and isinstance(hit.id, int) and isinstance(hit.score, float)
        assert isinstance(hit.key, str) and isinstance(hit.path, str)
        assert hit.path == str((root / "images" / hit.key).resolve())
        assert -1.0 - 1e-5 <= hit.score <= 1.0 + 1e-5
    data = json.loads(json.dumps(result.to_dict()))
    assert data["hits"][0]["rank"] == 1 and set(data["hits"][0]) >= {"rank", "id", "key", "path", "score"}


def test_scores_are_inner_products_of_the_embeddings(searcher, tiny_encoder):
    result = searcher.search("a blue square", k=12)
    query = tiny_encoder.encode_texts(["a blue square"])[0]
    ids, vectors = searcher.store.vectors()
    by_id = dict(zip(ids.tolist(), vectors, strict=True))
    np.testing.assert_allclose([h.score for h in result.hits], [by_id[h.id] @ query for h in result.hits], atol=1e-5)


# ------------------------------------------------------------------------------ image queries
def test_image_query_finds_the_indexed_image_first(searcher, indexed):
    _, paths = indexed
    for path in paths:
        result = searcher.search(image=path, k=3)
        assert result.query is None and result.image == str(path)
        assert result.hits[0].key == path.name
        assert result.hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert result.hits[1].score < result.hits[0].score


def test_image_query_with_a_copy_outside_the_collection(searcher, indexed, tmp_path):
    _, paths = indexed
    copy = tmp_path / "query.png"
    copy.write_bytes(paths[4].read_bytes())
    assert searcher.search(image=copy, k=1).hits[0].key == paths[4].name


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty"), (b"not an image at all", "not an image"), (None, "truncated")],
)
def test_corrupt_query_image_is_a_query_error(searcher, indexed, tmp_path, content, reason):
    _, paths = indexed
    bad = tmp_path / "bad.jpg"
    if content is None:
        data = paths[1].read_bytes()  # a JPEG
        content = data[: len(data) // 2]
    bad.write_bytes(content)
    with pytest.raises(QueryError, match=reason) as info:
        searcher.search(image=bad)
    assert str(bad) in str(info.value)


def test_missing_query_image_is_a_query_error(searcher, tmp_path):
    with pytest.raises(QueryError, match="unreadable"):
        searcher.search(image=tmp_path / "nope.png")


# ------------------------------------------------------------------------------ opening
def test_searcher_open_with_a_preset(indexed, tiny_encoder):
    from viewfinder.pipeline.store.index_store import StoreError

    root, paths = indexed
    with_preset = open_index(root / "index", "tiny")
    assert with_preset.encoder.fingerprint == tiny_encoder.fingerprint
    assert with_preset.search(image=paths[0], k=1).hits[0].key == paths[0].name
    # This index was built without recording an encoder entry: without a preset, say what to pass
    # (in library terms; the CLI adds its flag).
    with pytest.raises(StoreError, match="name the preset"):
        open_index(root / "index")


def test_search_vectors_batch(searcher, tiny_encoder, indexed):
    _, paths = indexed
    from viewfinder.pipeline.store.images import load_image

    queries = tiny_encoder.encode_images([load_image(p) for p in paths[:3]])
    lists = searcher.search_vectors(queries, 2)
    assert [hits[0].key for hits in lists] == [p.name for p in paths[:3]]
    assert all(len(hits) == 2 for hits in lists)
