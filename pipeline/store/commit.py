"""One commit of an :class:`~.index_store.IndexStore`, planned first, then applied.

:func:`plan_commit` decides what the next generation holds (a :class:`CommitPlan`) from the committed
items, the pending embeddings and the run's deletions, and writes nothing. :func:`next_faiss_index`
computes that generation's FAISS index in memory, and :func:`apply_rows` is the SQL of the commit
point, which :meth:`IndexStore.commit <.index_store.IndexStore.commit>` runs inside its single
SQLite transaction once the FAISS file is safely on disk.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import faiss
import numpy as np

from .faiss_index import build_index, resolve_factory, same_family
from .records import ItemRow, Manifest

logger = logging.getLogger(__name__)


@dataclass
class CommitPlan:
    """What the next generation holds, decided before anything is written."""

    old: Manifest
    """The committed generation's manifest."""
    manifest: Manifest
    """The next generation's manifest (its ``generation`` is the old one when nothing changes)."""
    rebuild: bool
    """Every committed item is replaced by the pending ones."""
    gone_keys: set[str]
    """Committed keys leaving ``items``: gone from the source, embedded again, or failing now."""
    gone_ids: np.ndarray
    """(G,) int64 ids of ``gone_keys``."""
    new_ids: np.ndarray
    """(N,) int64 ids of the pending embeddings."""
    new_vecs: np.ndarray
    """(N, D) float32 pending embeddings."""
    delete_keys: set[str]
    """Keys gone from the source (committed items and skipped files)."""
    update_rows: list[ItemRow]
    """Unchanged items whose path, mtime, text or metadata are updated."""
    in_place: bool
    """The committed FAISS index is updated (same spec, removal supported) instead of built anew."""

    @property
    def changed(self) -> bool:
        """True when items enter or leave the index."""
        return bool(len(self.gone_ids) or len(self.new_ids))

    @property
    def new_generation(self) -> bool:
        """True when the commit makes a new generation (and writes its FAISS file, unless empty)."""
        return self.manifest.generation != self.old.generation


def next_spec(old: Manifest, factory: str, dim: int, count: int) -> str:
    """The FAISS factory string the generation after ``old`` is built with, for ``count`` vectors."""
    spec = resolve_factory(factory, dim, count)
    if factory == old.factory and old.faiss_spec and same_family(old.faiss_spec, spec):
        return old.faiss_spec  # an auto-sized preset is re-sized only when the collection size changed a lot
    return spec


def plan_commit(
    db: sqlite3.Connection,
    old: Manifest,
    *,
    delete_keys: Iterable[str],
    update_rows: Iterable[ItemRow],
    rebuild: bool,
    removal_supported: Callable[[], bool],
    changes: dict[str, Any],
) -> CommitPlan:
    """Plan the generation after ``old`` from the ``items`` and ``pending`` tables of ``db``.

    ``removal_supported`` says whether the committed FAISS index can remove ids (asked only when an
    in-place update would need it); ``changes`` are manifest fields to set (falsy values keep the old).
    """
    changes = {name: value for name, value in changes.items() if value}
    dim = int(changes.pop("embed_dim", None) or old.embed_dim)
    factory = str(changes.pop("factory", None) or old.factory)
    pending = db.execute("SELECT key, id, vector FROM pending").fetchall()
    embedded = [(key, item_id, vector) for key, item_id, vector in pending if vector is not None]
    failed = {key for key, _, vector in pending if vector is None}
    committed = dict(db.execute("SELECT key, id FROM items").fetchall())
    delete_keys = set(delete_keys)
    if rebuild:
        gone_keys = set(committed)
    else:
        gone_keys = (delete_keys | failed | {key for key, _, _ in embedded}) & set(committed)
    gone_ids = np.array(sorted(committed[k] for k in gone_keys), dtype=np.int64)
    new_ids = np.array([item_id for _, item_id, _ in embedded], dtype=np.int64)
    new_vecs = np.frombuffer(b"".join(v for _, _, v in embedded), dtype=np.float32).reshape(len(embedded), dim)
    count = len(committed) - len(gone_ids) + len(new_ids)
    spec = next_spec(old, factory, dim, count)
    in_place = bool(
        count and not rebuild and spec == old.faiss_spec and old.count and (not len(gone_ids) or removal_supported())
    )
    rebuilt = bool(count) and not in_place
    bump = bool(len(gone_ids) or len(new_ids)) or rebuilt or spec != old.faiss_spec
    manifest = replace(
        old,
        **changes,
        embed_dim=dim,
        factory=factory,
        count=count,
        generation=old.generation + 1 if bump else old.generation,
        faiss_spec=spec if count else old.faiss_spec,
    )
    return CommitPlan(
        old, manifest, rebuild, gone_keys, gone_ids, new_ids, new_vecs, delete_keys, list(update_rows), in_place
    )


def generation_vectors(
    plan: CommitPlan, stored: Callable[[], tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """(ids (N,), vectors (N, D)) of the planned generation, in id order: the committed ones that stay
    (``stored`` gives them) and the pending ones."""
    if plan.rebuild:
        ids, vecs = np.zeros(0, np.int64), plan.new_vecs[:0]
    else:
        ids, vecs = stored()
    keep = ~np.isin(ids, plan.gone_ids)
    all_ids = np.concatenate([ids[keep], plan.new_ids])
    all_vecs = np.concatenate([vecs[keep], plan.new_vecs]) if len(all_ids) else plan.new_vecs
    order = np.argsort(all_ids, kind="stable")
    return all_ids[order], all_vecs[order]


def next_faiss_index(
    plan: CommitPlan,
    current: Callable[[], faiss.Index],
    vectors: Callable[[], tuple[np.ndarray, np.ndarray]],
) -> tuple[faiss.Index | None, bool]:
    """The FAISS index of the planned generation, or None when there is nothing new to write; and whether
    it was built anew (False: updated in place, or nothing to write).

    ``current`` gives the committed index (updated in place when the plan allows: the caller must
    drop it if the commit then fails); ``vectors`` gives the planned generation's (ids, vectors)
    (:func:`generation_vectors`).
    """
    if plan.manifest.count == 0:
        return None, False
    if plan.in_place:
        if not plan.changed:
            return None, False
        index = current()
        if len(plan.gone_ids):
            index.remove_ids(plan.gone_ids)
        if len(plan.new_ids):
            index.add_with_ids(plan.new_vecs, plan.new_ids)
        return index, False
    all_ids, all_vecs = vectors()
    spec = plan.manifest.faiss_spec
    if plan.old.count and spec != plan.old.faiss_spec:
        logger.info("FAISS index changes from %s to %s", plan.old.faiss_spec, spec)
    logger.info("building FAISS index %s over %d vectors", spec, len(all_ids))
    return build_index(spec, all_vecs, all_ids), True


def apply_rows(db: sqlite3.Connection, plan: CommitPlan) -> None:
    """The row changes of the commit point (run inside the commit's single transaction)."""
    if plan.rebuild:
        db.execute("DELETE FROM items")
        db.execute("DELETE FROM skipped")
    elif plan.gone_keys:
        db.executemany("DELETE FROM items WHERE key = ?", [(k,) for k in plan.gone_keys])
    db.execute(
        "INSERT INTO items (id, key, path, size, mtime_ns, sha256, text, metadata, vector)"
        " SELECT id, key, path, size, mtime_ns, sha256, text, metadata, vector FROM pending"
        " WHERE vector IS NOT NULL"
    )
    db.execute(
        "INSERT OR REPLACE INTO skipped (key, path, size, mtime_ns, reason)"
        " SELECT key, path, size, mtime_ns, reason FROM pending WHERE vector IS NULL"
    )
    db.execute("DELETE FROM skipped WHERE key IN (SELECT key FROM items)")
    if plan.delete_keys:
        db.executemany("DELETE FROM skipped WHERE key = ?", [(k,) for k in plan.delete_keys])
    db.executemany(
        "UPDATE items SET path = ?, size = ?, mtime_ns = ?, text = ?, metadata = ? WHERE id = ?",
        [(r.path, r.size, r.mtime_ns, r.text, json.dumps(r.metadata), r.id) for r in plan.update_rows],
    )
    db.execute("DELETE FROM pending")
