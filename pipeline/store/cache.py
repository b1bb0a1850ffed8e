"""Per-item model outputs kept beside an index: vision features for reranking, and captions.

They live in ``cache.sqlite`` in the index folder, apart from the index's own ``store.sqlite`` so
that a query may fill them while the index itself stays read-only. Rows are keyed by item id and
the model's fingerprint (captions also by their decoding settings), so outputs of another model or
other settings are never mixed in: they are simply not found, and recomputed. Every write is one
SQLite transaction (WAL, synchronous FULL): a crash loses at most the batch being written.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

CACHE_NAME = "cache.sqlite"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS features (item_id INTEGER NOT NULL, fingerprint TEXT NOT NULL,"
    " shape TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (item_id, fingerprint))",
    "CREATE TABLE IF NOT EXISTS captions (item_id INTEGER NOT NULL, fingerprint TEXT NOT NULL,"
    " settings TEXT NOT NULL, text TEXT NOT NULL, PRIMARY KEY (item_id, fingerprint, settings))",
)


@dataclass
class CacheStats:
    """What the cache holds for one model."""

    items: int
    bytes: int

    @property
    def bytes_per_item(self) -> float:
        return self.bytes / self.items if self.items else 0.0


class ModelCache:
    """The ``cache.sqlite`` of one index folder (created on first write)."""

    def __init__(self, index_dir: str | Path) -> None:
        self.path = Path(index_dir).expanduser() / CACHE_NAME
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            for statement in _SCHEMA:
                db.execute(statement)
            self._db = db
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _select(self, sql: str, ids: list[int], *params: str) -> list[tuple]:
        rows: list[tuple] = []
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            rows += self._conn().execute(sql.format(marks=marks), [*params, *chunk]).fetchall()
        return rows

    # ------------------------------------------------------------------ vision features
    def get_features(self, ids: Iterable[int], fingerprint: str) -> dict[int, np.ndarray]:
        """Cached features of ``ids`` for the model ``fingerprint`` (float16 arrays)."""
        wanted = [int(i) for i in ids]
        if not wanted or not self.path.exists():
            return {}
        rows = self._select(
            "SELECT item_id, shape, data FROM features WHERE fingerprint = ? AND item_id IN ({marks})",
            wanted,
            fingerprint,
        )
        return {i: np.frombuffer(data, dtype=np.float16).reshape(json.loads(shape)) for i, shape, data in rows}

    def has_features(self, ids: Iterable[int], fingerprint: str) -> set[int]:
        """Which of ``ids`` have cached features for the model ``fingerprint`` (nothing is loaded)."""
        wanted = [int(i) for i in ids]
        if not wanted or not self.path.exists():
            return set()
        sql = "SELECT item_id FROM features WHERE fingerprint = ? AND item_id IN ({marks})"
        return {i for (i,) in self._select(sql, wanted, fingerprint)}

    def put_features(self, features: Mapping[int, np.ndarray], fingerprint: str) -> None:
        """Store features (as float16) for the model ``fingerprint``, in one transaction."""
        if not features:
            return
        rows = [
            (int(i), fingerprint, json.dumps(list(f.shape)), np.ascontiguousarray(f, dtype=np.float16).tobytes())
            for i, f in features.items()
        ]
        with self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)", rows)

    def feature_stats(self, fingerprint: str) -> CacheStats:
        if not self.path.exists():
            return CacheStats(0, 0)
        n, size = (
            self._conn()
            .execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM features WHERE fingerprint = ?", (fingerprint,)
            )
            .fetchone()
        )
        return CacheStats(int(n), int(size))

    # ------------------------------------------------------------------ captions
    def get_captions(self, ids: Iterable[int], fingerprint: str, settings: str) -> dict[int, str]:
        """Cached captions of ``ids`` by the model ``fingerprint`` with decoding ``settings``."""
        wanted = [int(i) for i in ids]
        if not wanted or not self.path.exists():
            return {}
        rows = self._select(
            "SELECT item_id, text FROM captions WHERE fingerprint = ? AND settings = ? AND item_id IN ({marks})",
            wanted,
            fingerprint,
            settings,
        )
        return dict(rows)

    def put_captions(self, captions: Mapping[int, str], fingerprint: str, settings: str) -> None:
        if not captions:
            return
        with self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO captions VALUES (?, ?, ?, ?)",
                [(int(i), fingerprint, settings, text) for i, text in captions.items()],
            )

    def any_captions(self, ids: Iterable[int]) -> dict[int, str]:
        """A cached caption of each of ``ids`` that has one, by any captioner."""
        wanted = [int(i) for i in ids]
        if not wanted or not self.path.exists():
            return {}
        return dict(self._select("SELECT item_id, text FROM captions WHERE item_id IN ({marks})", wanted))

    def caption_texts(self, limit: int = 200_000) -> list[str]:
        """Up to ``limit`` cached captions, of any captioner (the words a collection is described with)."""
        if not self.path.exists():
            return []
        return [row[0] for row in self._conn().execute("SELECT text FROM captions LIMIT ?", (int(limit),))]

    # ------------------------------------------------------------------ housekeeping
    def prune(self, keep_fingerprints: Iterable[str], keep_ids: Iterable[int] | None = None) -> int:
        """Drop rows of other models (and, given ``keep_ids``, of items no longer in the index)."""
        if not self.path.exists():
            return 0
        keep = list(keep_fingerprints)
        marks = ",".join("?" * len(keep)) or "''"
        removed = 0
        with self._transaction() as db:
            for table in ("features", "captions"):
                removed += db.execute(f"DELETE FROM {table} WHERE fingerprint NOT IN ({marks})", keep).rowcount
            if keep_ids is not None:
                db.execute("CREATE TEMP TABLE IF NOT EXISTS keep_ids (id INTEGER PRIMARY KEY)")
                db.execute("DELETE FROM keep_ids")
                db.executemany("INSERT INTO keep_ids VALUES (?)", [(int(i),) for i in keep_ids])
                for table in ("features", "captions"):
                    removed += db.execute(
                        f"DELETE FROM {table} WHERE item_id NOT IN (SELECT id FROM keep_ids)"
                    ).rowcount
        return removed

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
