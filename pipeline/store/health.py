"""Checking an index folder file by file (read-only), and repairing what can be rebuilt from what is
intact: the FAISS file and the re-scoring vectors from the vectors in ``store.sqlite``, the derived
model cache by setting it aside, ``manifest.json`` from the SQLite meta."""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from .faiss_index import build_index, index_ids, set_search_params, split_refine
from .index_store import DEFAULT_NPROBE, IndexStore
from .records import DB_NAME, FORMAT_VERSION, FaissFileMissingError, IndexDamagedError, StoreError
from .records import now as _now

logger = logging.getLogger(__name__)

CACHE_NAME = "cache.sqlite"


@dataclass
class Problem:
    """One thing wrong with an index folder."""

    file: str
    what: str
    repairable: bool
    """``repair`` fixes it from what is intact; otherwise the index must be rebuilt from its source."""


@dataclass
class HealthReport:
    index: str
    generation: int = -1
    count: int = -1
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What is fine but worth knowing (an interrupted run's pending embeddings, leftover files)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def check_index(path: str | Path) -> HealthReport:
    """Every file of the index at ``path``, read-only: the SQLite file (integrity check), the manifest,
    the committed generation's FAISS file (loads, holds exactly the committed ids), its re-scoring
    vectors, ``manifest.json``, the model cache, leftovers of interrupted runs."""
    folder = Path(path).expanduser()
    report = HealthReport(str(folder))
    try:
        store = IndexStore.open(folder)
    except IndexDamagedError as exc:
        report.problems.append(Problem(DB_NAME, str(exc), repairable=False))
        return report
    with store:
        if not _check_sqlite(store, folder / DB_NAME, report):
            return report
        m = store.manifest
        report.generation, report.count = m.generation, m.count
        ids = np.array(sorted(row[0] for row in store.db.execute("SELECT id FROM items")), dtype=np.int64)
        if len(ids) != m.count:
            report.problems.append(Problem(DB_NAME, f"{len(ids)} items where the manifest says {m.count}", True))
        _check_faiss(store, ids, report)
        _check_manifest_file(store, report)
        _check_cache(folder / CACHE_NAME, report)
        pending = store.db.execute("SELECT COUNT(*) FROM pending").fetchone()[0]
        if pending:
            report.notes.append(f"{pending} embeddings of an interrupted run are kept; the next run resumes from them")
        keep = {f"index.{m.generation}.faiss", f"vectors.{m.generation}.ids.npy", f"vectors.{m.generation}.f16.npy"}
        stale = [p.name for p in [*folder.glob("index.*.faiss"), *folder.glob("vectors.*.npy")] if p.name not in keep]
        stale += [p.name for p in folder.glob(".*.tmp")]
        if stale:
            report.notes.append(f"files of earlier or unfinished commits, removed by the next write: {sorted(stale)}")
    return report


def _check_sqlite(store: IndexStore, file: Path, report: HealthReport) -> bool:
    try:
        result = [row[0] for row in store.db.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        result = [str(exc)]
    if result != ["ok"]:
        detail = "; ".join(result[:3])
        report.problems.append(Problem(file.name, f"SQLite integrity check: {detail}", repairable=False))
        return False
    if store.manifest.format_version != FORMAT_VERSION:
        report.problems.append(Problem(file.name, f"format version {store.manifest.format_version}", False))
        return False
    return True


def _check_faiss(store: IndexStore, ids: np.ndarray, report: HealthReport) -> None:
    m = store.manifest
    if not m.count:
        return
    name = f"index.{m.generation}.faiss"
    try:
        index = store.index
    except (IndexDamagedError, FaissFileMissingError) as exc:
        report.problems.append(Problem(name if name in str(exc) else "vectors.*.npy", str(exc), repairable=True))
        return
    held = np.sort(index_ids(index))
    if not np.array_equal(held, ids):
        missing, extra = len(np.setdiff1d(ids, held)), len(np.setdiff1d(held, ids))
        report.problems.append(Problem(name, f"{missing} committed items missing, {extra} ids not in the store", True))
    if split_refine(m.faiss_spec)[1] and store._refine is not None:
        refine_ids = np.asarray(store._refine[0])
        if not np.array_equal(refine_ids, ids):
            report.problems.append(Problem(f"vectors.{m.generation}.ids.npy", "ids differ from the store's", True))


def _check_manifest_file(store: IndexStore, report: HealthReport) -> None:
    file = store.path / "manifest.json"
    try:
        on_disk = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        report.problems.append(Problem(file.name, f"unreadable ({exc})", repairable=True))
        return
    m = store.manifest
    if on_disk.get("generation") != m.generation or on_disk.get("count") != m.count:
        report.problems.append(
            Problem(file.name, f"says generation {on_disk.get('generation')}, the store {m.generation}", True)
        )


def _check_cache(file: Path, report: HealthReport) -> None:
    if not file.is_file():
        return
    try:
        with sqlite3.connect(f"file:{file}?mode=ro", uri=True) as db:
            result = [row[0] for row in db.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        result = [str(exc)]
    if result != ["ok"]:
        what = f"model cache damaged ({'; '.join(result[:2])}): derived data, recomputed when needed"
        report.problems.append(Problem(file.name, what, repairable=True))


@dataclass
class RepairReport:
    index: str
    generation: int
    """The generation after the repair."""
    count: int
    actions: list[str] = field(default_factory=list)


def repair_index(path: str | Path) -> RepairReport:
    """Rebuild what :func:`check_index` finds repairable from what is intact, under the writer's lock:
    the FAISS file and re-scoring vectors from the stored vectors (as a new generation, committed like
    any other, so a reader of the old one is never left with a half-written file), a damaged model
    cache set aside, ``manifest.json`` rewritten. A damaged ``store.sqlite`` cannot be repaired from
    the folder: :class:`IndexDamagedError` says to rebuild from the source."""
    folder = Path(path).expanduser()
    before = check_index(folder)
    fatal = [p for p in before.problems if not p.repairable]
    if fatal:
        raise IndexDamagedError("; ".join(f"{p.file}: {p.what}" for p in fatal))
    report = RepairReport(str(folder), before.generation, before.count)
    if any(p.file == CACHE_NAME for p in before.problems):
        aside = folder / f"{CACHE_NAME}.damaged"
        (folder / CACHE_NAME).replace(aside)
        report.actions.append(f"set the damaged model cache aside as {aside.name} (recomputed when needed)")
    rebuild_faiss = any(p.file not in (CACHE_NAME, "manifest.json") for p in before.problems)
    store = IndexStore.open_to_annotate(folder)
    with store:
        if rebuild_faiss:
            _rebuild_faiss(store, report)
        store._write_manifest_file()
        store._remove_stale_files()
        if any(p.file == "manifest.json" for p in before.problems):
            report.actions.append("rewrote manifest.json from the store")
        report.generation, report.count = store.manifest.generation, store.manifest.count
    return report


def _rebuild_faiss(store: IndexStore, report: RepairReport) -> None:
    m = store.manifest
    ids, vectors = store.vectors()
    if not len(ids):
        raise StoreError(f"{store.path}: the store holds no vectors to rebuild the FAISS index from")
    generation = m.generation + 1
    index = build_index(m.faiss_spec, vectors, ids)
    set_search_params(index, m.nprobe or DEFAULT_NPROBE, 64)  # the tuned value travels in the file, as at commit
    store._write_faiss(generation, index)
    if split_refine(m.faiss_spec)[1]:
        store._write_refine(generation, ids, vectors)
    manifest = replace(m, generation=generation, count=len(ids), updated_at=_now())
    with store.transaction():
        store._set_meta("manifest", asdict(manifest))
    report.actions.append(
        f"rebuilt the FAISS index {m.faiss_spec} from {len(ids)} stored vectors as generation {generation}"
    )
    logger.info("%s: %s", store.path, report.actions[-1])
