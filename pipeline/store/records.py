"""The index store's data model: the SQLite schema, the manifest, item rows, and the store's errors."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ...errors import Error

FORMAT_VERSION = 1
DB_NAME = "store.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY, key TEXT UNIQUE NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, sha256 TEXT, text TEXT, metadata TEXT NOT NULL, vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS pending (
    key TEXT PRIMARY KEY, id INTEGER NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, sha256 TEXT, text TEXT, metadata TEXT NOT NULL, vector BLOB, reason TEXT
);
CREATE TABLE IF NOT EXISTS genid_ids (
    scheme TEXT NOT NULL, item_id INTEGER NOT NULL, identifier TEXT NOT NULL, live INTEGER NOT NULL,
    PRIMARY KEY (scheme, item_id), UNIQUE (scheme, identifier)
);
CREATE TABLE IF NOT EXISTS genid_state (scheme TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS skipped (
    key TEXT PRIMARY KEY, path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, reason TEXT NOT NULL
);
"""


class StoreError(Error, RuntimeError):
    """The index folder cannot be used as asked; the message says how to fix it."""


class EncoderMismatchError(StoreError):
    """The index was built with another encoder than the one in use."""


class IndexMissingError(StoreError, FileNotFoundError):
    """There is no index in the folder: build one first."""


class IndexEmptyError(StoreError):
    """The index holds no items yet: index its source."""


class RebuildNeededError(StoreError):
    """The index cannot be read or updated as it is (another format, a lost file): rebuild it."""


class IndexDamagedError(StoreError):
    """A file of the index is damaged (truncated, corrupted, inconsistent with the rest); the message
    names it and says what rebuilds it."""


class DiskWriteError(StoreError, OSError):
    """Writing the index failed (disk full, I/O error) before its commit point: nothing was committed."""


class IndexConflictError(StoreError):
    """Indexing this source into this folder would mix modalities or replace another source's items."""


class FaissFileMissingError(RebuildNeededError):
    """The FAISS file of the committed generation is not there (or a newer commit removed it meanwhile)."""

    def __init__(self, message: str, generation: int) -> None:
        super().__init__(message)
        self.generation = generation


@dataclass
class Manifest:
    """What an index is: its encoder, its FAISS type, its size."""

    format_version: int
    encoder_name: str
    encoder_fingerprint: str
    embed_dim: int
    modality: Literal["image", "text"]
    factory: str
    """The configured factory (a preset such as ``IVF`` or a FAISS string)."""
    faiss_spec: str
    """The FAISS factory string actually built."""
    count: int
    generation: int
    source: str
    created_at: str
    updated_at: str
    encoder_entry: dict[str, Any] = field(default_factory=dict)
    """The model entry the encoder was loaded from, so the index can be searched without a config."""
    preset: dict[str, Any] = field(default_factory=dict)
    """The preset it was built with (``name``, ``source``: packaged name or file, ``factory``), so a
    plain re-run or search keeps it."""
    nprobe: int = 0
    """IVF lists a search visits, tuned when the FAISS index was built (0: not tuned, or no lists)."""
    tuning: dict[str, Any] = field(default_factory=dict)
    """How ``nprobe`` was chosen: target and measured recall@k, queries, k (empty: not tuned)."""


@dataclass
class ItemRow:
    id: int
    key: str
    path: str
    size: int
    mtime_ns: int
    sha256: str | None
    text: str | None
    metadata: dict[str, Any]


@dataclass
class PendingRow:
    """An embedding computed by an unfinished run (vector None: the item failed, ``reason`` says why)."""

    item: ItemRow
    vector: np.ndarray | None
    reason: str | None = None


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()
