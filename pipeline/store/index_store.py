"""The index store: everything on disk for one collection.

Layout of an index folder::

    store.sqlite        items (id, key, path, size, mtime, sha256, text, metadata, vector),
                        pending embeddings of an unfinished run, skipped files, meta
    index.<gen>.faiss   FAISS index of committed generation <gen> (ids in an IVF's lists, else IndexIDMap2)
    vectors.<gen>.f16.npy, vectors.<gen>.ids.npy
                        for a spec ending in ``,Rfp16``: the generation's vectors as float16 and their
                        ids, in id order, memory-mapped to re-score each query's shortlist exactly
    manifest.json       readable mirror of the meta: encoder fingerprint, index type, counts

Crash safety: the committed generation number lives in SQLite. A run embeds into the
``pending`` table in batches (each batch one transaction), then commits (see :mod:`.commit`): it
plans the next generation, writes ``index.<gen+1>.faiss`` aside (fsync, rename), and only then, in
one SQLite transaction, moves pending rows into ``items`` and bumps the generation. A process
killed at any moment leaves generation <gen> intact and readable; the next run resumes from
``pending`` and the next writer removes the orphaned FAISS file.

Readers: a long-lived reader checks the committed generation on each use of :attr:`IndexStore.index`
and loads the new FAISS file when it changed; :meth:`IndexStore.read_snapshot` keeps the FAISS
index and the SQLite rows of one query on the same generation.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import faiss
import numpy as np

from .commit import CommitPlan, apply_rows, generation_vectors, next_faiss_index, plan_commit
from .faiss_index import (
    REFINE_FACTOR,
    match_parallelism,
    refined_search,
    set_search_params,
    split_refine,
    supports_removal,
    tune_nprobe,
)
from .faults import fault_point
from .fsutil import atomic_write, atomic_write_json, fsync_dir
from .records import (  # noqa: F401  (re-exported: the store's public names live here too)
    _SCHEMA,
    DB_NAME,
    FORMAT_VERSION,
    DiskWriteError,
    EncoderMismatchError,
    FaissFileMissingError,
    IndexConflictError,
    IndexDamagedError,
    IndexEmptyError,
    IndexMissingError,
    ItemRow,
    Manifest,
    PendingRow,
    RebuildNeededError,
    StoreError,
)
from .records import blob as _blob
from .records import now as _now

logger = logging.getLogger(__name__)

REPAIR_FAISS = (
    "repair the index: its FAISS file (and re-scoring vectors) are rebuilt from the vectors stored in "
    "store.sqlite, nothing is re-embedded"
)

DEFAULT_NPROBE = 16
"""IVF lists a search visits when neither the search config nor the index's tuning says."""


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as fh:  # np.save on a path would add ".npy" to the temporary name
        np.save(fh, array)


_T = TypeVar("_T")


def damaged_db_message(path: Path, exc: BaseException | str) -> str:
    return (
        f"{path / DB_NAME} is damaged ({exc}): it holds the items and their vectors, so the index must be "
        f"rebuilt from its source (a rebuild into the same folder sets the damaged file aside)"
    )


def is_damage(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite's error says the file is damaged (not a database, malformed), rather than busy,
    locked or full."""
    return not isinstance(exc, sqlite3.OperationalError) or "malformed" in str(exc)


def _reads_db(method: Callable[..., _T]) -> Callable[..., _T]:
    """A damaged SQLite file met while reading becomes one :class:`IndexDamagedError` naming it."""

    @functools.wraps(method)
    def wrapper(self: IndexStore, *args: Any, **kwargs: Any) -> _T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            raise IndexDamagedError(damaged_db_message(self.path, exc)) from exc

    return wrapper


class IndexStore:
    """One collection's index folder. Open with :meth:`open` (read) or :meth:`open_for_write`."""

    def __init__(self, path: Path, db: sqlite3.Connection, writable: bool) -> None:
        self.path = path
        self.db = db
        self.writable = writable
        self._index: faiss.Index | None = None
        self._index_generation = -1
        """The generation ``_index`` was loaded from."""
        self._search_params: tuple[int, int] | None = None
        """(nprobe, ef_search) applied to every FAISS index loaded (nprobe 0: the index's tuned value)."""
        self._refine: tuple[np.ndarray, np.ndarray, int] | None = None
        """(ids, float16 vectors) memory-mapped, and the shortlist factor, of ``_index_generation``, for
        indexes that re-score."""
        self._lock_fh: Any = None

    # ------------------------------------------------------------------ opening
    @staticmethod
    def exists(path: str | Path) -> bool:
        return (Path(path) / DB_NAME).is_file()

    @classmethod
    def open(cls, path: str | Path) -> IndexStore:
        """Open an existing index read-only."""
        folder = Path(path).expanduser()
        if not cls.exists(folder):
            raise IndexMissingError(f"no viewfinder index at {folder}: build one there first (index a source into it)")
        db = sqlite3.connect(f"file:{folder / DB_NAME}?mode=ro", uri=True, check_same_thread=False)
        store = cls(folder, db, writable=False)
        try:
            store._check_db()
            store._check_format()
        except BaseException:
            store.close()
            raise
        return store

    def _check_db(self) -> None:
        """Cheap checks that the SQLite file is whole: it is a database, and no shorter than its page
        count says (a truncated copy). Pages corrupted in place are found when read (or by ``check``)."""
        try:
            pages, size = (self.db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size"))
            self.db.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            raise IndexDamagedError(damaged_db_message(self.path, exc)) from exc
        on_disk = (self.path / DB_NAME).stat().st_size
        wal = self.path / f"{DB_NAME}-wal"
        if pages * size > on_disk and not (wal.is_file() and wal.stat().st_size):
            raise IndexDamagedError(
                damaged_db_message(self.path, f"{on_disk} bytes where its {pages} pages need {pages * size}")
            )

    @classmethod
    def open_for_write(
        cls,
        path: str | Path,
        *,
        encoder_name: str,
        encoder_fingerprint: str,
        embed_dim: int,
        modality: Literal["image", "text"],
        factory: str,
        source: str,
        encoder_entry: dict[str, Any] | None = None,
        preset: dict[str, Any] | None = None,
        replace_damaged: bool = False,
    ) -> IndexStore:
        """Open (creating if needed) an index for writing; holds an exclusive lock until closed.

        A new index records the given encoder, factory, source, encoder entry and preset summary. A
        damaged SQLite file is an :class:`IndexDamagedError`, or, with ``replace_damaged`` (a rebuild,
        which replaces every item anyway), is set aside as ``store.sqlite.damaged`` and a new index begins.
        """
        folder = Path(path).expanduser()
        if folder.exists() and not folder.is_dir():
            raise StoreError(f"{folder} is a file; an index is a folder: choose a new or empty folder")
        if folder.is_dir() and not cls.exists(folder) and any(p.name != ".lock" for p in folder.iterdir()):
            raise StoreError(f"{folder} is not empty and is not a viewfinder index: choose a new or empty folder")
        existed = cls.exists(folder)
        folder.mkdir(parents=True, exist_ok=True)
        store = cls._open_writer(folder, existed, replace_damaged)
        with store.transaction():
            store._create_tables()
            if store._meta("manifest") is None:
                now = _now()
                manifest = Manifest(
                    format_version=FORMAT_VERSION,
                    encoder_name=encoder_name,
                    encoder_fingerprint=encoder_fingerprint,
                    embed_dim=embed_dim,
                    modality=modality,
                    factory=factory,
                    faiss_spec="",
                    count=0,
                    generation=0,
                    source=source,
                    created_at=now,
                    updated_at=now,
                    encoder_entry=encoder_entry or {},
                    preset=preset or {},
                )
                store._set_meta("manifest", asdict(manifest))
                store._set_meta("next_id", 0)
                store._set_meta("uuid", uuid.uuid4().hex)
        store._check_format()
        store._remove_stale_files()
        store._write_manifest_file()
        return store

    def _create_tables(self) -> None:
        """The schema's tables that are missing (an older index gains the newer ones)."""
        for statement in _SCHEMA.strip().split(";"):
            if statement.strip():
                self.db.execute(statement)

    @classmethod
    def _locked(cls, folder: Path) -> IndexStore:
        """``folder``'s store opened for writing under the exclusive writer lock."""
        lock_fh = (folder / ".lock").open("w")
        try:
            fcntl.flock(lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            lock_fh.close()
            raise StoreError(f"another viewfinder process is writing {folder}; wait for it to finish") from exc
        db = sqlite3.connect(folder / DB_NAME, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as exc:  # not a database at all
            db.close()
            lock_fh.close()
            raise IndexDamagedError(damaged_db_message(folder, exc)) from exc
        store = cls(folder, db, writable=True)
        store._lock_fh = lock_fh
        return store

    @classmethod
    def _open_writer(cls, folder: Path, existed: bool, replace_damaged: bool) -> IndexStore:
        """The writer's store, its SQLite file checked when it existed (see :meth:`open_for_write`)."""
        try:
            store = cls._locked(folder)
            if existed:
                try:
                    store._check_db()
                except BaseException:
                    store.close()
                    raise
            return store
        except IndexDamagedError:
            if not replace_damaged:
                raise
        for suffix in ("", "-wal", "-shm"):
            damaged = folder / f"{DB_NAME}{suffix}"
            if damaged.exists():
                damaged.replace(folder / f"{DB_NAME}{suffix}.damaged")
        logger.warning("%s: the damaged %s was set aside as %s.damaged; rebuilding", folder, DB_NAME, DB_NAME)
        return cls._locked(folder)

    @classmethod
    def open_to_annotate(cls, path: str | Path) -> IndexStore:
        """Open an existing index to write what lives beside its items (e.g. generative identifiers),
        never its items or vectors; holds the same exclusive lock as indexing."""
        folder = Path(path).expanduser()
        if not cls.exists(folder):
            raise IndexMissingError(f"no viewfinder index at {folder}: build one there first (index a source into it)")
        store = cls._locked(folder)
        try:
            store._check_format()
            with store.transaction():
                store._create_tables()
                if store._meta("uuid") is None:  # an index made before indexes had one
                    store._set_meta("uuid", uuid.uuid4().hex)
        except BaseException:
            store.close()
            raise
        return store

    @property
    def uuid(self) -> str | None:
        """A random id given when the index was made (None for an index made before there were ids,
        until something annotates it): tells two indexes apart whatever their files say."""
        return self._meta("uuid")

    def close(self) -> None:
        self.db.close()
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self) -> IndexStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ meta
    def _meta(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def _set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    @property
    def manifest(self) -> Manifest:
        data = self._meta("manifest")
        if data is None:
            raise StoreError(f"{self.path} is an unfinished index with no manifest: delete the folder and re-index")
        return Manifest(**data)

    def _check_format(self) -> None:
        version = self.manifest.format_version
        if version != FORMAT_VERSION:
            raise RebuildNeededError(
                f"index {self.path} has format version {version}; this viewfinder reads version "
                f"{FORMAT_VERSION}: rebuild it from its source"
            )

    def check_encoder(self, name: str, fingerprint: str) -> None:
        """Raise :class:`EncoderMismatchError` unless the index was built with this encoder."""
        m = self.manifest
        if m.encoder_fingerprint != fingerprint:
            raise EncoderMismatchError(
                f"index {self.path} was built with encoder {m.encoder_name!r} (fingerprint "
                f"{m.encoder_fingerprint[:12]}); this config uses {name!r} (fingerprint {fingerprint[:12]}): "
                f"use the preset the index was built with, or rebuild it with this encoder"
            )

    def _write_manifest_file(self) -> None:
        """Mirror the manifest to ``manifest.json`` (for people and tools; SQLite is what counts, so a
        failed write is a warning, caught up at the next write)."""
        try:
            atomic_write_json(self.path / "manifest.json", asdict(self.manifest))
        except OSError as exc:
            logger.warning("%s: manifest.json could not be written (%s); the next write retries", self.path, exc)

    def _faiss_file(self, generation: int) -> Path:
        return self.path / f"index.{generation}.faiss"

    def _refine_files(self, generation: int) -> tuple[Path, Path]:
        """(ids file, float16 vectors file) of a generation whose spec re-scores from disk."""
        return self.path / f"vectors.{generation}.ids.npy", self.path / f"vectors.{generation}.f16.npy"

    def _remove_stale_files(self) -> None:
        generation = self.manifest.generation
        keep = {self._faiss_file(generation).name, *(f.name for f in self._refine_files(generation))}
        for stale in [*self.path.glob("index.*.faiss"), *self.path.glob("vectors.*.npy")]:
            if stale.name not in keep:
                stale.unlink(missing_ok=True)
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return self.manifest.count

    @contextmanager
    def read_snapshot(self) -> Iterator[Manifest]:
        """One read transaction: the manifest, :attr:`index` and the rows read inside all belong to
        the generation committed when it began, whatever a writer commits meanwhile."""
        if self.db.in_transaction:
            yield self.manifest
            return
        self.db.execute("BEGIN")
        try:
            yield self.manifest
        finally:
            self.db.execute("ROLLBACK")  # nothing was written: this only ends the read transaction

    @property
    def index(self) -> faiss.Index:
        """The committed FAISS index: loaded lazily, and again when another generation was committed
        since (one read of the generation in SQLite per use)."""
        m = self.manifest
        if self._index is None or self._index_generation != m.generation:
            if self._index is not None:
                logger.info("%s: generation %d committed, loading its FAISS index", self.path, m.generation)
            self._index = self._load_index(m)
            self._refine = self._load_refine(m)
            self._index_generation = m.generation
        return self._index

    def _load_index(self, m: Manifest) -> faiss.Index:
        if m.count == 0:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(m.embed_dim))
        else:
            file = self._faiss_file(m.generation)
            try:
                index = faiss.read_index(str(file))
            except RuntimeError as exc:
                if file.is_file():
                    detail = str(exc).rsplit("Error: ", 1)[-1].strip()[:80]  # FAISS's own words, without its C++ frame
                    raise IndexDamagedError(
                        f"{file} is damaged (FAISS cannot read it: {detail}): {REPAIR_FAISS}"
                    ) from exc
                raise FaissFileMissingError(f"{file} is missing: {REPAIR_FAISS}", m.generation) from exc
            if index.ntotal != m.count:
                raise IndexDamagedError(
                    f"{file} holds {index.ntotal} vectors where the index has {m.count} items: {REPAIR_FAISS}"
                )
        if self._search_params is not None:
            nprobe, ef_search = self._search_params
            set_search_params(index, nprobe or m.nprobe or DEFAULT_NPROBE, ef_search)
        return index

    def _load_refine(self, m: Manifest) -> tuple[np.ndarray, np.ndarray, int] | None:
        if m.count == 0 or not split_refine(m.faiss_spec)[1]:
            return None
        ids_file, vectors_file = self._refine_files(m.generation)
        what = f"{vectors_file.parent}: the vectors this index re-scores with ({ids_file.name}, {vectors_file.name})"
        try:
            ids, vectors = np.load(ids_file, mmap_mode="r"), np.load(vectors_file, mmap_mode="r")
        except FileNotFoundError as exc:
            raise FaissFileMissingError(f"{what} are missing: {REPAIR_FAISS}", m.generation) from exc
        except (OSError, ValueError) as exc:
            raise IndexDamagedError(f"{what} are damaged ({exc}): {REPAIR_FAISS}") from exc
        if ids.shape != (m.count,) or vectors.shape != (m.count, m.embed_dim):
            raise IndexDamagedError(
                f"{what} hold {ids.shape} ids and {vectors.shape} vectors for {m.count} items: {REPAIR_FAISS}"
            )
        return ids, vectors, int(m.tuning.get("refine_factor") or REFINE_FACTOR)

    def configure_search(self, nprobe: int, ef_search: int) -> None:
        """Set IVF ``nprobe`` (0: the value tuned when the index was built) and HNSW ``ef_search``, now
        and on every FAISS index loaded later."""
        self._search_params = (nprobe, ef_search)
        if self._index is not None:
            set_search_params(self._index, nprobe or self.manifest.nprobe or DEFAULT_NPROBE, ef_search)

    def search_vectors(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) float32 queries -> scores (Q, k) and ids (Q, k); id -1 where fewer than k items.
        An index that re-scores (``,Rfp16``) ranks a shortlist by exact scores from its fp16 vectors."""
        k = max(1, min(k, max(len(self), 1)))
        index = self.index
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if self._refine is None:
            match_parallelism(index, len(queries))
            return index.search(queries, k)
        ids, vectors, factor = self._refine
        return refined_search(index, queries, k, lambda found: vectors[np.searchsorted(ids, found)], factor)

    @_reads_db
    def items_by_id(self, ids: Iterable[int]) -> dict[int, ItemRow]:
        wanted = [int(i) for i in ids if int(i) >= 0]
        rows: dict[int, ItemRow] = {}
        for start in range(0, len(wanted), 900):
            chunk = wanted[start : start + 900]
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(
                f"SELECT id, key, path, size, mtime_ns, sha256, text, metadata FROM items WHERE id IN ({marks})",
                chunk,
            ):
                rows[row[0]] = ItemRow(*row[:7], json.loads(row[7]))
        return rows

    @_reads_db
    def iter_items(self) -> Iterator[ItemRow]:
        for row in self.db.execute(
            "SELECT id, key, path, size, mtime_ns, sha256, text, metadata FROM items ORDER BY id"
        ):
            yield ItemRow(*row[:7], json.loads(row[7]))

    @_reads_db
    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """All committed (ids (N,), vectors (N, D)) in id order."""
        dim = self.manifest.embed_dim
        rows = self.db.execute("SELECT id, vector FROM items ORDER BY id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        return ids, vecs

    @_reads_db
    def vectors_by_id(self, ids: Iterable[int]) -> np.ndarray:
        """(n, D) stored vectors of committed items ``ids``, in that order (KeyError for an unknown id)."""
        wanted = [int(i) for i in ids]
        found: dict[int, bytes] = {}
        for start in range(0, len(wanted), 900):
            chunk = wanted[start : start + 900]
            marks = ",".join("?" * len(chunk))
            found.update(self.db.execute(f"SELECT id, vector FROM items WHERE id IN ({marks})", chunk).fetchall())
        missing = [i for i in wanted if i not in found]
        if missing:
            raise KeyError(f"no committed items with ids {missing[:5]}")
        dim = self.manifest.embed_dim
        return np.frombuffer(b"".join(found[i] for i in wanted), dtype=np.float32).reshape(len(wanted), dim)

    @_reads_db
    def committed_state(self) -> dict[str, tuple[int, int, int, str | None, str | None, str]]:
        """key -> (id, size, mtime_ns, sha256, text, metadata JSON) of committed items."""
        return {
            r[0]: tuple(r[1:])  # type: ignore[misc]
            for r in self.db.execute("SELECT key, id, size, mtime_ns, sha256, text, metadata FROM items")
        }

    @_reads_db
    def skipped_state(self) -> dict[str, tuple[int, int, str]]:
        """key -> (size, mtime_ns, reason) of files skipped by an earlier run."""
        return {r[0]: (r[1], r[2], r[3]) for r in self.db.execute("SELECT key, size, mtime_ns, reason FROM skipped")}

    @_reads_db
    def pending_state(self) -> dict[str, tuple[int, int, int, str | None]]:
        """key -> (id, size, mtime_ns, failure reason or None) of rows handled by an unfinished run."""
        return {
            r[0]: (r[1], r[2], r[3], r[4])
            for r in self.db.execute("SELECT key, id, size, mtime_ns, reason FROM pending")
        }

    # ------------------------------------------------------------------ writing
    def prepare_run(self, encoder_fingerprint: str, rebuild: bool) -> None:
        """Drop pending rows that another encoder or another kind of run produced."""
        run = {"fingerprint": encoder_fingerprint, "rebuild": rebuild}
        if self._meta("pending_run") != run:
            with self.transaction():
                dropped = self.db.execute("DELETE FROM pending").rowcount
                self._set_meta("pending_run", run)
            if dropped:
                logger.info(
                    "discarded %d pending embeddings from an interrupted run of another kind",
                    dropped,
                )

    def discard_pending(self, keys: Iterable[str]) -> None:
        with self.transaction():
            self.db.executemany("DELETE FROM pending WHERE key = ?", [(k,) for k in keys])

    def allocate_ids(self, n: int) -> list[int]:
        """Reserve ``n`` new ids (never reused, even after deletions)."""
        with self.transaction():
            start = int(self._meta("next_id"))
            self._set_meta("next_id", start + n)
        return list(range(start, start + n))

    def add_pending(self, rows: list[PendingRow]) -> None:
        """Checkpoint a batch of embeddings (one transaction)."""
        with self._disk_errors("checkpointing embeddings"), self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO pending (key, id, path, size, mtime_ns, sha256, text, metadata, vector, reason)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        r.item.key,
                        r.item.id,
                        r.item.path,
                        r.item.size,
                        r.item.mtime_ns,
                        r.item.sha256,
                        r.item.text,
                        json.dumps(r.item.metadata),
                        None if r.vector is None else _blob(r.vector),
                        r.reason,
                    )
                    for r in rows
                ],
            )
            fault_point("pending-written")

    def commit(
        self,
        *,
        delete_keys: Iterable[str] = (),
        update_rows: Iterable[ItemRow] = (),
        factory: str | None = None,
        rebuild: bool = False,
        encoder_name: str | None = None,
        encoder_fingerprint: str | None = None,
        encoder_entry: dict[str, Any] | None = None,
        embed_dim: int | None = None,
        source: str | None = None,
        preset: dict[str, Any] | None = None,
        target_recall: float = 0.0,
    ) -> Manifest:
        """Fold pending embeddings, deletions and metadata updates into a new generation, atomically.

        ``rebuild`` replaces every committed item by the pending ones (a re-embedding run, possibly
        with an encoder of another ``embed_dim``). ``target_recall`` > 0: an IVF index built anew gets
        the smallest nprobe reaching that recall@10 on a sample of its own vectors, recorded in the
        manifest (an index updated in place keeps its nprobe). The other arguments are manifest fields
        to record (None keeps the committed value).
        """
        plan = plan_commit(
            self.db,
            self.manifest,
            delete_keys=delete_keys,
            update_rows=update_rows,
            rebuild=rebuild,
            removal_supported=lambda: supports_removal(self.index),
            changes={
                "factory": factory,
                "encoder_name": encoder_name,
                "encoder_fingerprint": encoder_fingerprint,
                "encoder_entry": encoder_entry,
                "embed_dim": embed_dim,
                "source": source,
                "preset": preset,
                "updated_at": _now(),
            },
        )
        built_from: list[tuple[np.ndarray, np.ndarray]] = []

        def vectors() -> tuple[np.ndarray, np.ndarray]:  # computed once, only when needed
            if not built_from:
                built_from.append(generation_vectors(plan, self.vectors))
            return built_from[0]

        try:
            with self._disk_errors("writing the next generation"):
                index, built = next_faiss_index(plan, lambda: self.index, vectors)
                refine = split_refine(plan.manifest.faiss_spec)[1]
                if index is not None and plan.new_generation:
                    if built:
                        plan.manifest = self._tuned(plan.manifest, index, vectors, refine, target_recall)
                    self._write_faiss(plan.manifest.generation, index)
                    if refine:
                        self._write_refine(plan.manifest.generation, *vectors())
                self._apply_commit(plan)
        except BaseException:
            self._index = None  # possibly updated in place for a generation that was not committed
            raise
        fault_point("sqlite-committed")
        if index is not None:
            self._index, self._index_generation = index, plan.manifest.generation
            self._refine = self._load_refine(plan.manifest)
        try:
            self._write_manifest_file()
            self._remove_stale_files()
            fsync_dir(self.path)
        except OSError as exc:  # committed already: the files beside it catch up at the next write
            logger.warning(
                "%s: generation %d is committed, but manifest.json or the old files could not be updated (%s); "
                "that happens the next time the index is written",
                self.path,
                plan.manifest.generation,
                exc,
            )
        return plan.manifest

    def _tuned(
        self,
        manifest: Manifest,
        index: faiss.Index,
        vectors: Any,
        refine: bool,
        target_recall: float,
    ) -> Manifest:
        """``manifest`` with the nprobe tuned for a freshly built ``index`` (cleared when it has no lists)."""
        tuning = None
        if target_recall > 0 and "IVF" in manifest.faiss_spec:
            ids, vecs = vectors()
            lookup = None
            if refine:
                half = vecs.astype(np.float16)  # what the search will read from disk
                lookup = lambda found: half[np.searchsorted(ids, found)]  # noqa: E731
            tuning = tune_nprobe(index, vecs, ids, target=target_recall, lookup=lookup)
        if tuning is None:
            return replace(manifest, nprobe=0, tuning={})
        logger.info(
            "%s: nprobe %d reaches recall@%d %.3f (target %.2f)",
            self.path,
            tuning.nprobe,
            tuning.k,
            tuning.recall,
            target_recall,
        )
        return replace(manifest, nprobe=tuning.nprobe, tuning=asdict(tuning))

    def _write_refine(self, generation: int, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Write a generation's re-scoring files aside (fsync, rename), ids in order with their float16 vectors."""
        ids_file, vectors_file = self._refine_files(generation)
        atomic_write(vectors_file, lambda tmp: _save_npy(tmp, vectors.astype(np.float16)))
        atomic_write(ids_file, lambda tmp: _save_npy(tmp, ids.astype(np.int64)))

    @contextmanager
    def _disk_errors(self, doing: str) -> Iterator[None]:
        """A full disk or a failing device while ``doing`` (before the commit point) becomes one clear
        :class:`DiskWriteError`: nothing was committed and nothing is lost."""
        try:
            yield
        except OSError as exc:
            raise DiskWriteError(self._disk_message(doing, exc.strerror or str(exc))) from exc
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "full" not in text and "I/O" not in text:
                raise
            raise DiskWriteError(self._disk_message(doing, text)) from exc

    def _disk_message(self, doing: str, what: str) -> str:
        return (
            f"{self.path}: {doing} failed: {what}. Nothing of this run was committed: the index is its "
            f"previous generation, and the embeddings already checkpointed are kept for the next run to "
            f"resume from. Free space (or fix the device) and run again"
        )

    def _write_faiss(self, generation: int, index: faiss.Index) -> None:
        """Write a generation's FAISS file aside (fsync, rename): not in use until :meth:`_apply_commit`."""
        atomic_write(self._faiss_file(generation), lambda tmp: faiss.write_index(index, str(tmp)))

    def _apply_commit(self, plan: CommitPlan) -> None:
        """The commit point: the planned rows and manifest, in one SQLite transaction."""
        with self.transaction():
            apply_rows(self.db, plan)
            self._set_meta("manifest", asdict(plan.manifest))
            fault_point("sqlite-in-transaction")
