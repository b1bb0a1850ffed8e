"""What an indexing run will do: which items to embed, keep, update or drop, and whether the FAISS
factory can hold the result (checked before anything is embedded)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import faiss

from .faiss_index import PRESETS, IndexBuildError, resolve_factory, split_refine
from .index_store import IndexStore, ItemRow, Manifest
from .sources import SourceItem


@dataclass
class RunPlan:
    """What a run does with each item of the source, decided before embedding anything."""

    to_embed: list[ItemRow] = field(default_factory=list)
    delete_keys: list[str] = field(default_factory=list)
    """Keys gone from the source: committed items and skipped files."""
    updates: list[ItemRow] = field(default_factory=list)
    unchanged: int = 0
    resumed: int = 0
    reembed_keys: set[str] = field(default_factory=set)
    """Committed items embedded again (their content changed, or a rebuild)."""
    removed: int = 0
    """Committed items gone from the source."""
    dropped_before: int = 0
    """Committed items that failed in the interrupted run being resumed (they leave the index)."""
    skipped_before: list[tuple[str, str]] = field(default_factory=list)

    @property
    def expected_count(self) -> int:
        """Items in the index after the run, if every embedding succeeds."""
        return self.unchanged + self.resumed + len(self.to_embed)


def _file_sha256(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _live_pending(store: IndexStore, items: list[SourceItem]) -> dict[str, tuple[int, int, int, str | None]]:
    """Pending rows still valid for ``items``; those of files gone or changed since are discarded."""
    pending = store.pending_state()
    current = {it.key: (it.size, it.mtime_ns) for it in items}
    stale = [key for key, row in pending.items() if current.get(key) != row[1:3]]
    if stale:
        store.discard_pending(stale)
    return {key: row for key, row in pending.items() if current.get(key) == row[1:3]}


def _plan_committed(plan: RunPlan, it: SourceItem, row: ItemRow, committed: tuple) -> None:
    """An item already in the index: unchanged (maybe with new metadata) or to embed again."""
    cid, size, mtime, sha, text, meta = committed
    row.id = cid
    same_file = (size, mtime) == (it.size, it.mtime_ns)
    if not same_file and size == it.size and it.content_hash is None:
        same_file = _file_sha256(it.path) == sha  # touched, not changed: no re-embedding
    if it.content_hash is not None:
        same_file = it.content_hash == sha
    if same_file:
        plan.unchanged += 1
        if (text, meta, mtime) != (it.text, json.dumps(it.metadata), it.mtime_ns):
            row.sha256 = sha
            plan.updates.append(row)
        return
    plan.reembed_keys.add(it.key)
    plan.to_embed.append(row)


def plan_run(store: IndexStore, items: list[SourceItem], rebuild: bool) -> RunPlan:
    """Sort every listed item into resumed, unchanged, skipped before, or to embed (allocating new ids)."""
    prior = store.committed_state()
    committed = {} if rebuild else prior
    skipped = {} if rebuild else store.skipped_state()
    pending = _live_pending(store, items)
    source_keys = {it.key for it in items}
    plan = RunPlan()
    need_ids: list[ItemRow] = []
    for it in items:
        row = ItemRow(-1, it.key, it.path, it.size, it.mtime_ns, it.content_hash, it.text, it.metadata)
        if it.key in pending:
            reason = pending[it.key][3]
            if reason is None:
                plan.resumed += 1
            else:
                plan.skipped_before.append((it.path, reason + " (before the interruption)"))
                plan.dropped_before += it.key in prior
            continue
        if it.key in committed:
            _plan_committed(plan, it, row, committed[it.key])
            continue
        if it.key in skipped and skipped[it.key][:2] == (it.size, it.mtime_ns):
            plan.skipped_before.append((it.path, skipped[it.key][2] + " (unchanged since an earlier run)"))
            continue
        plan.to_embed.append(row)
        if it.key in prior:  # a rebuild keeps ids stable
            row.id = prior[it.key][0]
            plan.reembed_keys.add(it.key)
        else:
            need_ids.append(row)
    for row, new_id in zip(need_ids, store.allocate_ids(len(need_ids)) if need_ids else [], strict=True):
        row.id = new_id
    plan.delete_keys = [k for k in committed if k not in source_keys] + [k for k in skipped if k not in source_keys]
    plan.removed = sum(k not in source_keys for k in prior)
    return plan


def check_factory(factory: str, dim: int, n_vectors: int) -> str:
    """The FAISS factory string ``factory`` resolves to for ``n_vectors`` embeddings of size ``dim``.

    Raises :class:`IndexBuildError` when FAISS cannot parse it (checked before anything is embedded).
    """
    spec = resolve_factory(factory, dim, max(n_vectors, 1))
    try:
        faiss.index_factory(dim, split_refine(spec)[0], faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        why = re.sub(r"^Error in .*? at \S+:\d+: ", "", str(exc).strip())
        resolved = f" (resolved to {spec!r})" if spec != factory else ""
        raise IndexBuildError(
            f"FAISS cannot build the index factory {factory!r}{resolved} for {dim}-dimensional embeddings: {why}; "
            f"use a preset ({', '.join(PRESETS)}) or a valid FAISS factory string such as 'IVF256,Flat' or 'HNSW32'"
        ) from exc
    return spec


def factory_change(manifest: Manifest, factory: str, spec: str) -> str | None:
    """``'OLD -> NEW'`` when indexing with ``factory`` (built as ``spec``) turns the committed FAISS index
    into another type."""
    if not manifest.count or not manifest.faiss_spec or factory == manifest.factory or spec == manifest.faiss_spec:
        return None

    def describe(name: str, built: str) -> str:
        return name if name == built else f"{name} ({built})"

    return f"{describe(manifest.factory, manifest.faiss_spec)} -> {describe(factory, spec)}"
