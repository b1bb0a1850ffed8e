"""Text queries are cleaned before they are searched: invisible characters never count as words."""

from __future__ import annotations

import pytest

from viewfinder.pipeline.store.search import MAX_QUERY_CHARS, QueryError, clean_query


@pytest.mark.parametrize(
    "query",
    [
        "\u200b\u200b",  # zero-width spaces
        "\x00\x07",  # NUL, BEL
        "\u2060\ufeff",  # word joiner, byte-order mark
        " \u200c\u200d\t\x1b ",  # zero-width (non-)joiners, a tab, ESC
        "\u00ad\u202e\x7f",  # soft hyphen, right-to-left override, DEL
    ],
)
def test_invisible_only_queries_are_refused_like_empty_ones(tiny_encoder, query):
    with pytest.raises(QueryError, match="empty") as info:
        clean_query(query, tiny_encoder)
    message = str(info.value)
    assert "invisible" in message and "give some words" in message


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_queries_are_refused(tiny_encoder, query):
    with pytest.raises(QueryError, match="empty: give some words"):
        clean_query(query, tiny_encoder)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a red\u200bcircle", "a red circle"),  # a zero-width space separates words
        ("a r\u00aded \ufeffcircle\u2060", "a red circle"),  # format characters inside words are dropped
        ("a\x00red\x07 circle", "a red circle"),  # control characters count as spaces
        ("  a   red  circle ", "a red circle"),
    ],
)
def test_invisible_characters_are_stripped_from_real_queries(tiny_encoder, query, expected):
    assert clean_query(query, tiny_encoder) == (expected, False)


def test_searching_an_invisible_query_is_a_query_error(tiny_encoder, tmp_path, make_images):
    from viewfinder.pipeline.config import IndexConfig
    from viewfinder.pipeline.store.index_store import IndexStore
    from viewfinder.pipeline.store.indexer import Indexer
    from viewfinder.pipeline.store.search import Searcher

    make_images(3)
    Indexer(tiny_encoder, IndexConfig(factory="Flat"), progress=False).run(tmp_path / "images", tmp_path / "index")
    searcher = Searcher(IndexStore.open(tmp_path / "index"), tiny_encoder)
    with pytest.raises(QueryError, match="empty"):
        searcher.search("\u200b\u2060\x00")


def test_too_long_queries_are_still_refused(tiny_encoder):
    with pytest.raises(QueryError, match="shorten it"):
        clean_query("red " * MAX_QUERY_CHARS, tiny_encoder)
