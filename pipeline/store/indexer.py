"""Incremental indexing of a source (folder or JSONL manifest) into an :class:`IndexStore`.

Decoding and preprocessing run in DataLoader worker processes while the main process encodes,
so the model is not starved. Embeddings are checkpointed in batches; a killed run resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import torch
from torch.utils.data import DataLoader, Dataset

from ...adapters.base import ImageTextEncoder
from ..config import IndexConfig
from ..progress import progress_bar
from .commit import next_spec
from .faiss_index import PRESETS, IndexBuildError, check_trainable, resolve_factory
from .images import ImageDecodeError, decode_image
from .index_store import IndexStore, ItemRow, Manifest, PendingRow, StoreError
from .sources import Modality, SourceItem, list_source

logger = logging.getLogger(__name__)


@dataclass
class IndexReport:
    """What one indexing run did."""

    index: str
    source: str
    added: int = 0
    """New items embedded and indexed."""
    reembedded: int = 0
    """Indexed items whose file (or caption) changed, embedded again; every indexed item in a rebuild."""
    removed: int = 0
    """Indexed items gone from the source, taken out of the index."""
    dropped: int = 0
    """Indexed items whose file changed and can no longer be read: taken out of the index (see ``skipped``)."""
    unchanged: int = 0
    metadata_updated: int = 0
    resumed: int = 0
    """Items embedded by an interrupted earlier run and reused, not embedded again."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(file or manifest line, reason) for everything that could not be indexed."""
    count: int = 0
    seconds: float = 0.0
    embedded_per_second: float = 0.0
    factory_change: str | None = None
    """``'OLD -> NEW'`` when this run changed the FAISS factory of a non-empty index, so its FAISS index
    was rebuilt as the new type (from the stored vectors: nothing is re-embedded for it); a warning says so too."""


@dataclass
class _Plan:
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


def _plan_committed(plan: _Plan, it: SourceItem, row: ItemRow, committed: tuple) -> None:
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


def _plan(store: IndexStore, items: list[SourceItem], rebuild: bool) -> _Plan:
    """Sort every listed item into resumed, unchanged, skipped before, or to embed (allocating new ids)."""
    prior = store.committed_state()
    committed = {} if rebuild else prior
    skipped = {} if rebuild else store.skipped_state()
    pending = _live_pending(store, items)
    source_keys = {it.key for it in items}
    plan = _Plan()
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
        faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        why = re.sub(r"^Error in .*? at \S+:\d+: ", "", str(exc).strip())
        resolved = f" (resolved to {spec!r})" if spec != factory else ""
        raise IndexBuildError(
            f"FAISS cannot build the index factory {factory!r}{resolved} for {dim}-dimensional embeddings: {why}; "
            f"use a preset ({', '.join(PRESETS)}) or a valid FAISS factory string such as 'IVF256,Flat' or 'HNSW32'"
        ) from exc
    return spec


def _factory_change(manifest: Manifest, factory: str, spec: str) -> str | None:
    """``'OLD -> NEW'`` when indexing with ``factory`` (built as ``spec``) turns the committed FAISS index
    into another type."""
    if not manifest.count or not manifest.faiss_spec or factory == manifest.factory or spec == manifest.faiss_spec:
        return None

    def describe(name: str, built: str) -> str:
        return name if name == built else f"{name} ({built})"

    return f"{describe(manifest.factory, manifest.faiss_spec)} -> {describe(factory, spec)}"


class _ImageFiles(Dataset):
    """Reads, hashes, decodes and preprocesses image files (runs in DataLoader workers)."""

    def __init__(self, rows: list[ItemRow], transform: Callable[[Any], torch.Tensor], max_pixels: int) -> None:
        self.paths = [r.path for r in rows]
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None, str | None]:
        try:
            data = Path(self.paths[i]).read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            image = decode_image(data, self.max_pixels)
            return i, self.transform(image), sha, None
        except ImageDecodeError as exc:
            return i, None, None, str(exc)
        except OSError as exc:
            return i, None, None, f"unreadable: {exc}"
        except Exception as exc:  # a transform failing on an odd image must not stop the run
            return i, None, None, f"preprocessing failed: {exc!r}"


@dataclass
class _DecodedBatch:
    """One batch as a worker hands it over: the good images stacked into one tensor (one shared-memory
    block instead of one per image), their hashes, and the failures."""

    good: list[int]
    """Row indices of the decoded images, in ``pixels`` order."""
    pixels: torch.Tensor | None
    """(G, 3, H, W) preprocessed pixels, None when nothing in the batch decoded."""
    shas: list[str]
    failed: list[tuple[int, str]]
    """(row index, reason) of what could not be read."""

    @property
    def size(self) -> int:
        return len(self.good) + len(self.failed)

    def pin_memory(self) -> _DecodedBatch:
        """Called by the DataLoader when pinning (CUDA encoders): page-locked pixels copy faster."""
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        return self


def _collate(batch: list[tuple[int, torch.Tensor | None, str | None, str | None]]) -> _DecodedBatch:
    """Runs in the worker: stack what decoded (images whose tensor shape differs from the batch's are failures)."""
    failed = [(i, reason or "no pixels") for i, px, _, reason in batch if px is None]
    decoded = [(i, px, sha) for i, px, sha, _ in batch if px is not None]
    shape = decoded[0][1].shape if decoded else None
    failed += [
        (i, f"preprocessing gave shape {tuple(px.shape)}, not {tuple(shape)}")
        for i, px, _ in decoded
        if px.shape != shape
    ]
    decoded = [d for d in decoded if d[1].shape == shape]
    pixels = torch.stack([px for _, px, _ in decoded]) if decoded else None
    return _DecodedBatch([i for i, _, _ in decoded], pixels, [sha or "" for _, _, sha in decoded], failed)


class Indexer:
    """Indexes a source into an index folder with one encoder (given, never built here).

    ``encoder_entry`` (the model entry the encoder came from) and ``preset`` (the summary of the preset
    in use, :func:`~viewfinder.pipeline.config.preset_summary`) are recorded in the manifest, so the
    index can be searched and re-indexed without a config.
    """

    def __init__(
        self,
        encoder: ImageTextEncoder,
        config: IndexConfig,
        *,
        encoder_entry: dict[str, Any] | None = None,
        preset: dict[str, Any] | None = None,
        progress: bool | None = None,
    ) -> None:
        self.encoder = encoder
        self.config = config
        self.encoder_entry = encoder_entry or {}
        self.preset = preset or {}
        self.progress = progress

    def run(
        self,
        source: str | Path,
        index_dir: str | Path,
        *,
        modality: Modality = "image",
        rebuild: bool = False,
    ) -> IndexReport:
        """Bring ``index_dir`` up to date with ``source``: embed what is new or changed, drop what is gone."""
        start = time.perf_counter()
        index_dir = Path(index_dir).expanduser().resolve()
        listing = list_source(source, modality, exclude=index_dir)
        source_str = str(Path(source).expanduser().resolve())
        report = IndexReport(index=str(index_dir), source=source_str, skipped=list(listing.problems))
        enc = self.encoder
        check_factory(self.config.factory, enc.embed_dim, len(listing.items))  # before the folder is touched
        with IndexStore.open_for_write(
            index_dir,
            encoder_name=enc.name,
            encoder_fingerprint=enc.fingerprint,
            embed_dim=enc.embed_dim,
            modality=modality,
            factory=self.config.factory,
            source=source_str,
            encoder_entry=self.encoder_entry,
            preset=self.preset,
        ) as store:
            self._check_store(store, modality, source_str, rebuild)
            store.prepare_run(enc.fingerprint, rebuild)
            plan = _plan(store, listing.items, rebuild)
            self._check_plan(store, plan, report, rebuild)
            embed_start = time.perf_counter()
            if modality == "image":
                failed = self._embed_images(store, plan.to_embed)
            else:
                failed = self._embed_texts(store, plan.to_embed)
            embed_seconds = time.perf_counter() - embed_start
            new_manifest = store.commit(
                delete_keys=plan.delete_keys,
                update_rows=plan.updates,
                factory=self.config.factory,
                rebuild=rebuild,
                encoder_name=enc.name,
                encoder_fingerprint=enc.fingerprint,
                encoder_entry=self.encoder_entry,
                embed_dim=enc.embed_dim,
                source=source_str,
                preset=self.preset,
            )
        _fill_report(report, plan, failed)
        report.count = new_manifest.count
        report.seconds = time.perf_counter() - start
        report.embedded_per_second = len(plan.to_embed) / embed_seconds if embed_seconds > 0 else 0.0
        return report

    def _check_store(self, store: IndexStore, modality: Modality, source: str, rebuild: bool) -> None:
        """Refuse a run that would mix modalities, replace another source's items, or mix encoders."""
        manifest = store.manifest
        if manifest.modality != modality:
            raise StoreError(
                f"index {store.path} holds {manifest.modality} embeddings; use --modality {manifest.modality} "
                f"or another --index folder"
            )
        if manifest.count and manifest.source != source and not rebuild:
            raise StoreError(
                f"index {store.path} mirrors {manifest.source}; indexing {source} into it would remove "
                f"everything else: use another --index folder, or --rebuild to replace its contents"
            )
        if not rebuild and manifest.count:
            store.check_encoder(self.encoder.name, self.encoder.fingerprint)

    def _check_plan(self, store: IndexStore, plan: _Plan, report: IndexReport, rebuild: bool) -> None:
        """Before embedding: the FAISS index can be trained on what the collection will hold; a change of
        factory is announced. Fills the report's plan-time counters."""
        dim, factory, expected = self.encoder.embed_dim, self.config.factory, plan.expected_count
        manifest = store.manifest
        spec = next_spec(manifest, factory, dim, expected)
        leaving = plan.removed + plan.dropped_before + len(plan.reembed_keys)
        in_place = bool(manifest.count) and spec == manifest.faiss_spec and ("HNSW" not in spec or not leaving)
        if expected and (rebuild or not in_place):  # an index updated in place is trained already
            check_trainable(spec, expected)
        report.factory_change = _factory_change(manifest, factory, spec)
        if report.factory_change:
            logger.warning(
                "index %s: FAISS factory changes, %s: the FAISS index is rebuilt as the new type; "
                "to keep the old one, index with --factory %s",
                store.path,
                report.factory_change,
                manifest.factory,
            )
        report.unchanged, report.resumed = plan.unchanged, plan.resumed
        report.skipped += plan.skipped_before
        logger.info(
            "%s: %d to embed, %d unchanged, %d resumed, %d to remove",
            store.path,
            len(plan.to_embed),
            plan.unchanged,
            plan.resumed,
            plan.removed,
        )

    def _flush(self, store: IndexStore, rows: list[PendingRow]) -> None:
        if rows:
            store.add_pending(rows)
            rows.clear()

    def _worker_transform(self) -> Callable[[Any], torch.Tensor]:
        """What decoding workers run: the encoder's uint8 transform when it offers one (normalisation then
        happens in ``encode_image_tensors``, on the device, and 4x fewer bytes cross processes), else its
        float transform."""
        return getattr(self.encoder, "uint8_image_transform", None) or self.encoder.image_transform

    def _embed_images(self, store: IndexStore, rows: list[ItemRow]) -> list[tuple[ItemRow, str]]:
        """Embed image files into ``pending``; returns the rows that failed, with the reason."""
        if not rows:
            return []
        cfg = self.config
        loader = DataLoader(
            _ImageFiles(rows, self._worker_transform(), cfg.max_image_pixels),
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            collate_fn=_collate,
            prefetch_factor=4 if cfg.num_workers else None,
            pin_memory=getattr(getattr(self.encoder, "device", None), "type", "cpu") == "cuda",
        )
        failed: list[tuple[ItemRow, str]] = []
        buffer: list[PendingRow] = []
        with progress_bar("embedding images", len(rows), "img", self.progress) as bar:
            for batch in loader:
                for i, reason in batch.failed:
                    failed.append((rows[i], reason))
                    buffer.append(PendingRow(rows[i], None, reason))
                if batch.pixels is not None:
                    vectors = self.encoder.encode_image_tensors(batch.pixels)  # (G, D)
                    for i, sha, vec in zip(batch.good, batch.shas, vectors, strict=True):
                        rows[i].sha256 = sha
                        buffer.append(PendingRow(rows[i], vec))
                if len(buffer) >= cfg.checkpoint_every:
                    self._flush(store, buffer)
                bar.advance(batch.size)
        self._flush(store, buffer)
        return failed

    def _embed_texts(self, store: IndexStore, rows: list[ItemRow]) -> list[tuple[ItemRow, str]]:
        """Embed captions into ``pending`` (nothing fails; the list is for symmetry with images)."""
        cfg = self.config
        failed: list[tuple[ItemRow, str]] = []
        buffer: list[PendingRow] = []
        with progress_bar("embedding texts", len(rows), "txt", self.progress) as bar:
            for start in range(0, len(rows), cfg.batch_size):
                chunk = rows[start : start + cfg.batch_size]
                vectors = self.encoder.encode_texts([r.text or "" for r in chunk])  # (B, D)
                buffer.extend(PendingRow(r, v) for r, v in zip(chunk, vectors, strict=True))
                if len(buffer) >= cfg.checkpoint_every:
                    self._flush(store, buffer)
                bar.advance(len(chunk))
        self._flush(store, buffer)
        return failed


def _fill_report(report: IndexReport, plan: _Plan, failed: list[tuple[ItemRow, str]]) -> None:
    """The run's counters: a failed re-embedding is neither added nor re-embedded, but dropped."""
    report.skipped += [(row.path, reason) for row, reason in failed]
    failed_keys = {row.key for row, _ in failed}
    embedded = {row.key for row in plan.to_embed} - failed_keys
    report.reembedded = len(embedded & plan.reembed_keys)
    report.added = len(embedded) - report.reembedded
    report.dropped = plan.dropped_before + len(failed_keys & plan.reembed_keys)
    report.removed = plan.removed
    report.metadata_updated = len(plan.updates)
