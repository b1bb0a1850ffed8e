"""Searching an index with a text or an image; typed results shared by the CLI and the API."""

from __future__ import annotations

import logging
import numbers
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...adapters.base import ImageTextEncoder
from ...errors import Error
from ..config import IndexConfig
from .images import ImageDecodeError, load_image
from .index_store import FaissFileMissingError, IndexEmptyError, IndexStore, ItemRow, Manifest

logger = logging.getLogger(__name__)

_SNAPSHOT_ATTEMPTS = 5
"""A query reading a generation whose FAISS file a newer commit just removed is retried on the newer one."""

MAX_QUERY_CHARS = 4000
"""Queries longer than this are refused outright (tokenizing megabytes of text is never meant)."""


class QueryError(Error, ValueError):
    """The query cannot be searched; the message says why and what to do."""


def check_query(text: str | None, image: str | Path | None, k: int, *, composed: bool = False) -> None:
    """The checks every search entry point shares (a :class:`Searcher`, a pipeline, a session):
    exactly one of a text or an image, and ``k`` >= 1. ``composed``: mention that an image with an
    edit makes a composed query (where the caller takes one)."""
    if (text is None) == (image is None):
        also = " (with an edit: a composed query)" if composed else ""
        raise QueryError(f"give exactly one of a text query or an image{also}")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:  # numpy integers count too
        raise QueryError(f"k must be an integer >= 1, got {k!r}")


@dataclass
class Hit:
    rank: int
    id: int
    key: str
    path: str
    score: float
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    """The score each stage of the pipeline gave (``preselect``, later ``rerank``...); ``score`` is the final one."""
    caption: str | None = None
    """A generated description of the image (when the pipeline has a caption stage)."""


@dataclass
class SearchResult:
    query: str | None
    """The text query as searched (after whitespace clean-up), or None for an image query."""
    image: str | None
    """Path of the query image, or None for a text query."""
    hits: list[Hit]
    timings: dict[str, float]
    """Seconds per step: ``encode``, ``search``, ``lookup`` (a :class:`Searcher`) or per stage (a pipeline)."""
    truncated: bool = False
    """True when the text was longer than the encoder's context and was cut to fit."""
    trace: dict[str, Any] | None = None
    """What each stage did (a pipeline's :class:`~viewfinder.pipeline.stages.trace.Trace`, as a dict)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def clean_query(text: str, encoder: ImageTextEncoder) -> tuple[str, bool]:
    """Validate a text query; returns (text, truncated).

    Control characters (Unicode category Cc: NUL, BEL, tabs...) count as spaces; format characters
    (Cf: zero-width spaces and joiners, word joiner, byte-order mark, soft hyphen...) are dropped.
    Queries left empty (or whitespace-only), and queries over :data:`MAX_QUERY_CHARS` characters,
    are errors. Queries needing more tokens than the encoder's context are truncated to fit (the
    tokenizer keeps the first tokens), a warning is logged and ``truncated`` is True.
    """
    import unicodedata

    if not isinstance(text, str):
        raise QueryError(f"a text query must be a string, got {type(text).__name__}")
    visible = "".join(
        " " if category == "Cc" or ch == "\u200b" else "" if category == "Cf" else ch
        for ch in text
        for category in (unicodedata.category(ch),)
    )  # U+200B (zero-width space) separates words: a space; other format characters sit inside them
    clean = " ".join(visible.split())
    if not clean:
        hidden = " (it holds only invisible control or zero-width characters)" if text.strip() else ""
        raise QueryError(f"the query is empty{hidden}: give some words to search for, or an image")
    if len(clean) > MAX_QUERY_CHARS:
        raise QueryError(
            f"the query is {len(clean)} characters long; the limit is {MAX_QUERY_CHARS} "
            f"(the encoder reads at most {encoder.context_length} tokens): shorten it"
        )
    n_tokens = encoder.count_tokens(clean)
    truncated = n_tokens > encoder.context_length
    if truncated:
        logger.warning(
            "query has %d tokens; encoder %s reads %d: searching with the first %d",
            n_tokens,
            encoder.name,
            encoder.context_length,
            encoder.context_length,
        )
    return clean, truncated


class Searcher:
    """Answers queries against one index with one encoder (both given to the constructor).

    A searcher may live long: each query reads the committed generation (one small SQLite read) and
    loads the new FAISS index when a writer has committed another one. The FAISS search and the
    lookup of its ids in SQLite read the same generation.
    """

    def __init__(self, store: IndexStore, encoder: ImageTextEncoder, config: IndexConfig | None = None) -> None:
        store.check_encoder(encoder.name, encoder.fingerprint)
        self.store = store
        self.encoder = encoder
        self.config = config or IndexConfig()
        store.configure_search(self.config.nprobe, self.config.ef_search)

    def search(self, text: str | None = None, *, image: str | Path | None = None, k: int = 10) -> SearchResult:
        """Search with a text or (``image=``) an image path; returns the top ``k`` hits."""
        check_query(text, image, k)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        truncated = False
        if text is not None:
            query_vec, text, truncated = self.encode_query_text(text)  # (1, D)
        else:
            query_vec = self.encode_query_image(image)  # (1, D)
        timings["encode"] = time.perf_counter() - t0
        hits = self.search_vectors(query_vec, k, timings)[0]
        return SearchResult(text, None if image is None else str(image), hits, timings, truncated)

    def encode_query_text(self, text: str) -> tuple[np.ndarray, str, bool]:
        """Validate and embed a text query: (embedding (1, D), cleaned text, truncated)."""
        clean, truncated = clean_query(text, self.encoder)
        return self.encoder.encode_texts([clean]), clean, truncated

    def encode_query_image(self, image: str | Path) -> np.ndarray:
        """Decode and embed a query image: (1, D); a :class:`QueryError` when it cannot be read."""
        try:
            return self.encoder.encode_images([load_image(image, self.config.max_image_pixels)])
        except ImageDecodeError as exc:
            raise QueryError(f"cannot read query image {image}: {exc}") from exc

    def search_vectors(self, queries: np.ndarray, k: int, timings: dict[str, float] | None = None) -> list[list[Hit]]:
        """(Q, D) query embeddings -> Q ranked hit lists.

        Raises :class:`StoreError` when the index holds nothing (the message says how to fill it).
        """
        timings = timings if timings is not None else {}
        for attempt in range(1, _SNAPSHOT_ATTEMPTS + 1):
            try:
                scores, ids, rows = self._search_snapshot(queries, k, timings)
                break
            except FaissFileMissingError as exc:
                # Either the file is really gone, or a commit replaced the generation being loaded.
                if attempt == _SNAPSHOT_ATTEMPTS or self.store.manifest.generation == exc.generation:
                    raise
                logger.info("generation %d was replaced while loading it; searching the new one", exc.generation)
        t0 = time.perf_counter()
        out: list[list[Hit]] = []
        for q_scores, q_ids in zip(scores, ids, strict=True):
            hits = []
            for score, item_id in zip(q_scores, q_ids, strict=True):
                row = rows.get(int(item_id))
                if row is None:
                    continue
                hits.append(
                    Hit(
                        len(hits) + 1,
                        row.id,
                        row.key,
                        row.path,
                        float(score),
                        row.text,
                        row.metadata,
                    )
                )
            out.append(hits)
        timings["lookup"] += time.perf_counter() - t0
        return out

    def _search_snapshot(
        self, queries: np.ndarray, k: int, timings: dict[str, float]
    ) -> tuple[np.ndarray, np.ndarray, dict[int, ItemRow]]:
        """FAISS search and id lookup in one read snapshot: scores (Q, k), ids (Q, k), rows by id."""
        with self.store.read_snapshot() as manifest:
            self._check_not_empty(manifest)
            t0 = time.perf_counter()
            scores, ids = self.store.search_vectors(queries, k)  # (Q, k), (Q, k)
            timings["search"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            rows = self.store.items_by_id(np.unique(ids).tolist())
            timings["lookup"] = time.perf_counter() - t0
        return scores, ids, rows

    def _check_not_empty(self, manifest: Manifest) -> None:
        if manifest.count == 0:
            source = manifest.source or "SOURCE"
            raise IndexEmptyError(
                f"index {self.store.path} is empty (nothing indexed yet, its source had no usable files, or its "
                f"first run was interrupted): index {source} into it"
            )
