"""Incremental indexing of a source (folder or JSONL manifest) into an :class:`IndexStore`.

Decoding and preprocessing run in DataLoader worker processes while the main process encodes,
so the model is not starved. Embeddings are checkpointed in batches; a killed run resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ...adapters.base import ImageTextEncoder
from ..config import IndexConfig
from ..progress import progress_bar
from .faiss_index import check_trainable, resolve_factory
from .images import ImageDecodeError, decode_image
from .index_store import IndexStore, ItemRow, PendingRow, StoreError
from .sources import Modality, SourceItem, list_source

logger = logging.getLogger(__name__)


@dataclass
class IndexReport:
    """What one indexing run did."""

    index: str
    source: str
    added: int = 0
    reembedded: int = 0
    removed: int = 0
    unchanged: int = 0
    metadata_updated: int = 0
    resumed: int = 0
    """Items embedded by an interrupted earlier run and reused, not embedded again."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(file or manifest line, reason) for everything that could not be indexed."""
    count: int = 0
    seconds: float = 0.0
    embedded_per_second: float = 0.0


@dataclass
class _Plan:
    to_embed: list[ItemRow]
    delete_keys: list[str]
    updates: list[ItemRow]
    unchanged: int
    resumed: int
    reembedded: int
    skipped_before: list[tuple[str, str]]


def _file_sha256(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _plan(store: IndexStore, items: list[SourceItem], rebuild: bool) -> _Plan:
    prior = store.committed_state()
    committed = {} if rebuild else prior
    skipped = {} if rebuild else store.skipped_state()
    pending = store.pending_state()
    source_keys = {it.key for it in items}
    store.discard_pending([k for k in pending if k not in source_keys])

    to_embed: list[ItemRow] = []
    updates: list[ItemRow] = []
    skipped_before: list[tuple[str, str]] = []
    unchanged = resumed = reembedded = 0
    need_ids: list[ItemRow] = []
    for it in items:
        meta_json = json.dumps(it.metadata)
        row = ItemRow(-1, it.key, it.path, it.size, it.mtime_ns, it.content_hash, it.text, it.metadata)
        if it.key in pending and pending[it.key][1:3] == (it.size, it.mtime_ns):
            reason = pending[it.key][3]
            if reason is None:
                resumed += 1
            else:
                skipped_before.append((it.path, reason + " (before the interruption)"))
            continue
        if it.key in committed:
            cid, size, mtime, sha, text, meta = committed[it.key]
            row.id = cid
            same_file = (size, mtime) == (it.size, it.mtime_ns)
            if not same_file and size == it.size and it.content_hash is None:
                same_file = _file_sha256(it.path) == sha  # touched, not changed: no re-embedding
            if it.content_hash is not None:
                same_file = it.content_hash == sha
            if same_file:
                unchanged += 1
                if (text, meta, mtime) != (it.text, meta_json, it.mtime_ns):
                    row.sha256 = sha
                    updates.append(row)
                continue
            reembedded += 1
            to_embed.append(row)
            continue
        if it.key in skipped and skipped[it.key][:2] == (it.size, it.mtime_ns):
            skipped_before.append((it.path, skipped[it.key][2] + " (unchanged since an earlier run)"))
            continue
        to_embed.append(row)
        if it.key in prior:  # a rebuild keeps ids stable
            row.id = prior[it.key][0]
        else:
            need_ids.append(row)
    for row, new_id in zip(need_ids, store.allocate_ids(len(need_ids)) if need_ids else [], strict=True):
        row.id = new_id
    delete_keys = [k for k in committed if k not in source_keys]
    delete_keys += [k for k in skipped if k not in source_keys]
    return _Plan(to_embed, delete_keys, updates, unchanged, resumed, reembedded, skipped_before)


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


def _collate(batch: list[tuple[int, torch.Tensor | None, str | None, str | None]]) -> list:
    return batch


class Indexer:
    """Indexes a source into an index folder with one encoder (given, never built here)."""

    def __init__(
        self,
        encoder: ImageTextEncoder,
        config: IndexConfig,
        *,
        encoder_entry: dict[str, Any] | None = None,
        progress: bool | None = None,
    ) -> None:
        self.encoder = encoder
        self.config = config
        self.encoder_entry = encoder_entry or {}
        self.progress = progress

    def run(
        self,
        source: str | Path,
        index_dir: str | Path,
        *,
        modality: Modality = "image",
        rebuild: bool = False,
    ) -> IndexReport:
        start = time.perf_counter()
        index_dir = Path(index_dir).expanduser().resolve()
        listing = list_source(source, modality, exclude=index_dir)
        source_str = str(Path(source).expanduser().resolve())
        report = IndexReport(index=str(index_dir), source=source_str, skipped=list(listing.problems))
        enc = self.encoder
        with IndexStore.open_for_write(
            index_dir,
            encoder_name=enc.name,
            encoder_fingerprint=enc.fingerprint,
            embed_dim=enc.embed_dim,
            modality=modality,
            factory=self.config.factory,
            source=source_str,
            encoder_entry=self.encoder_entry,
        ) as store:
            manifest = store.manifest
            if manifest.modality != modality:
                raise StoreError(
                    f"index {index_dir} holds {manifest.modality} embeddings; use --modality {manifest.modality} "
                    f"or another --index folder"
                )
            if manifest.count and manifest.source != source_str and not rebuild:
                raise StoreError(
                    f"index {index_dir} mirrors {manifest.source}; indexing {source_str} into it would remove "
                    f"everything else: use another --index folder, or --rebuild to replace its contents"
                )
            if not rebuild and manifest.count:
                store.check_encoder(enc.name, enc.fingerprint)
            store.prepare_run(enc.fingerprint, rebuild)
            plan = _plan(store, listing.items, rebuild)
            expected = manifest.count - len(plan.delete_keys) + len(plan.to_embed) + plan.resumed
            check_trainable(resolve_factory(self.config.factory, enc.embed_dim, expected), expected)
            report.unchanged, report.resumed = plan.unchanged, plan.resumed
            report.skipped += plan.skipped_before
            logger.info(
                "%s: %d to embed, %d unchanged, %d resumed, %d to remove",
                index_dir,
                len(plan.to_embed),
                plan.unchanged,
                plan.resumed,
                len(plan.delete_keys),
            )
            embed_start = time.perf_counter()
            if modality == "image":
                failed = self._embed_images(store, plan.to_embed)
            else:
                failed = self._embed_texts(store, plan.to_embed)
            embed_seconds = time.perf_counter() - embed_start
            report.skipped += failed
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
            )
        n_ok = len(plan.to_embed) - len(failed)
        report.reembedded = min(plan.reembedded, n_ok)
        report.added = n_ok - report.reembedded
        report.removed = len(plan.delete_keys)
        report.metadata_updated = len(plan.updates)
        report.count = new_manifest.count
        report.seconds = time.perf_counter() - start
        report.embedded_per_second = len(plan.to_embed) / embed_seconds if embed_seconds > 0 else 0.0
        return report

    def _flush(self, store: IndexStore, rows: list[PendingRow]) -> None:
        if rows:
            store.add_pending(rows)
            rows.clear()

    def _embed_images(self, store: IndexStore, rows: list[ItemRow]) -> list[tuple[str, str]]:
        if not rows:
            return []
        cfg = self.config
        loader = DataLoader(
            _ImageFiles(rows, self.encoder.image_transform, cfg.max_image_pixels),
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            collate_fn=_collate,
            prefetch_factor=4 if cfg.num_workers else None,
        )
        failed: list[tuple[str, str]] = []
        buffer: list[PendingRow] = []
        with progress_bar("embedding images", len(rows), "img", self.progress) as bar:
            for batch in loader:
                good = [(i, px, sha) for i, px, sha, _ in batch if px is not None]
                for i, _, _, reason in batch:
                    if reason is not None:
                        failed.append((rows[i].path, reason))
                        buffer.append(PendingRow(rows[i], None, reason))
                if good:
                    vectors = self.encoder.encode_image_tensors(torch.stack([px for _, px, _ in good]))  # (B, D)
                    for (i, _, sha), vec in zip(good, vectors, strict=True):
                        rows[i].sha256 = sha
                        buffer.append(PendingRow(rows[i], vec))
                if len(buffer) >= cfg.checkpoint_every:
                    self._flush(store, buffer)
                bar.advance(len(batch))
        self._flush(store, buffer)
        return failed

    def _embed_texts(self, store: IndexStore, rows: list[ItemRow]) -> list[tuple[str, str]]:
        cfg = self.config
        failed: list[tuple[str, str]] = []
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


def embeddings_matrix(store: IndexStore) -> tuple[list[ItemRow], np.ndarray]:
    """All committed items and their vectors, in id order (for evaluation)."""
    ids, vecs = store.vectors()
    rows = store.items_by_id(ids.tolist())
    return [rows[int(i)] for i in ids], vecs
