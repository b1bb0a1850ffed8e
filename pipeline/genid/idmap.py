"""The identifier map of an index: which generated identifier names which item, per scheme.

It lives in the index's SQLite store (tables ``genid_ids`` and ``genid_state``), next to the items.
:func:`sync_id_map` brings it up to date after the index changed: items added since get new
identifiers, removed items' identifiers are retired (kept, marked not live, never given again),
and old items keep theirs, so a model trained on the map stays right about them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..store.index_store import IndexStore
from ..store.records import ItemRow
from .schemes import assign, check_scheme


@dataclass
class IdMap:
    """One scheme's identifiers: ``ids`` of live items, ``retired`` ones of removed items."""

    scheme: str
    ids: dict[int, str] = field(default_factory=dict)
    """Store item id -> identifier, for the items in the index now."""
    retired: dict[int, str] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    """The scheme's counters / centroids (:func:`.schemes.assign`)."""

    def fingerprint(self) -> str:
        """A digest of the live (item, identifier) pairs: a model trained on this map checks it."""
        pairs = json.dumps(sorted(self.ids.items()), separators=(",", ":"))
        return hashlib.sha256(f"{self.scheme}:{pairs}".encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "ids": {str(k): v for k, v in self.ids.items()},
                "retired": {str(k): v for k, v in self.retired.items()}, "state": self.state}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IdMap:
        return cls(data["scheme"], {int(k): v for k, v in data["ids"].items()},
                   {int(k): v for k, v in data.get("retired", {}).items()}, data.get("state", {}))  # fmt: skip


def load_id_map(store: IndexStore, scheme: str) -> IdMap:
    """The scheme's map as the store holds it (empty when none was made yet)."""
    check_scheme(scheme)
    try:
        rows = store.db.execute(
            "SELECT item_id, identifier, live FROM genid_ids WHERE scheme = ?", (scheme,)
        ).fetchall()
        state = store.db.execute("SELECT state FROM genid_state WHERE scheme = ?", (scheme,)).fetchone()
    except sqlite3.OperationalError:  # an index made before identifiers existed
        return IdMap(scheme)
    out = IdMap(scheme, state=json.loads(state[0]) if state else {})
    for item, identifier, live in rows:
        (out.ids if live else out.retired)[int(item)] = identifier
    return out


@dataclass
class SyncReport:
    id_map: IdMap
    added: list[int]
    """Items named by this sync."""
    retired: list[int]
    """Items gone from the index since the last sync."""


def sync_id_map(
    index: str | Path,
    scheme: str,
    describe: Callable[[list[ItemRow]], list[str]] | None = None,
    **assign_options: Any,
) -> SyncReport:
    """Name the index's items that have no identifier yet and retire those of removed items, in one
    transaction. ``describe``: captions for new items (the ``structured`` scheme needs them)."""
    check_scheme(scheme)
    store = IndexStore.open_to_annotate(index)
    try:
        id_map = load_id_map(store, scheme)
        rows = {row.id: row for row in store.iter_items()}
        gone = sorted(set(id_map.ids) - set(rows))
        new = sorted(set(rows) - set(id_map.ids))
        vectors = store.vectors_by_id(new) if scheme == "semantic" and new else None
        texts = None
        if scheme == "structured" and new:
            if describe is None:
                raise ValueError("structured identifiers need captions: pass describe")
            texts = describe([rows[i] for i in new])
        named = assign(scheme, id_map.state, new, vectors, texts, **assign_options) if new else {}
        taken = set(id_map.ids.values()) | set(id_map.retired.values())
        clash = taken & set(named.values())
        if clash:
            raise RuntimeError(f"identifier scheme {scheme}: {sorted(clash)[:3]} would be given twice")
        with store.transaction():
            store.db.executemany("UPDATE genid_ids SET live = 0 WHERE scheme = ? AND item_id = ?",
                                 [(scheme, i) for i in gone])  # fmt: skip
            store.db.executemany("INSERT INTO genid_ids (scheme, item_id, identifier, live) VALUES (?, ?, ?, 1)",
                                 [(scheme, i, name) for i, name in named.items()])  # fmt: skip
            store.db.execute("INSERT OR REPLACE INTO genid_state (scheme, state) VALUES (?, ?)",
                             (scheme, json.dumps(id_map.state)))  # fmt: skip
        for i in gone:
            id_map.retired[i] = id_map.ids.pop(i)
        id_map.ids.update(named)
        return SyncReport(id_map, new, gone)
    finally:
        store.close()


__all__ = ["IdMap", "SyncReport", "load_id_map", "sync_id_map"]
