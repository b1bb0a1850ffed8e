"""Incremental indexing of a source (folder or JSONL manifest) into an :class:`IndexStore`.

Decoding and preprocessing run in DataLoader worker processes while the main process encodes,
so the model is not starved. Embeddings are checkpointed in batches; a killed run resumes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ...adapters.base import ImageTextEncoder
from ..config import IndexConfig
from ..progress import progress_bar
from .commit import next_spec
from .decode import ImageFiles, collate_decoded
from .faiss_index import check_trainable
from .index_store import IndexConflictError, IndexStore, ItemRow, PendingRow
from .plan import RunPlan, check_factory, factory_change, plan_run
from .sources import Modality, list_source

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
            plan = plan_run(store, listing.items, rebuild)
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
            raise IndexConflictError(
                f"index {store.path} holds {manifest.modality} embeddings: index {manifest.modality}s into it, "
                f"or {modality}s into another folder"
            )
        if manifest.count and manifest.source != source and not rebuild:
            raise IndexConflictError(
                f"index {store.path} mirrors {manifest.source}; indexing {source} into it would remove "
                f"everything else: use another folder, or rebuild it to replace its contents"
            )
        if not rebuild and manifest.count:
            store.check_encoder(self.encoder.name, self.encoder.fingerprint)

    def _check_plan(self, store: IndexStore, plan: RunPlan, report: IndexReport, rebuild: bool) -> None:
        """Before embedding: the FAISS index can be trained on what the collection will hold; a change of
        factory is announced. Fills the report's plan-time counters."""
        dim, factory, expected = self.encoder.embed_dim, self.config.factory, plan.expected_count
        manifest = store.manifest
        spec = next_spec(manifest, factory, dim, expected)
        leaving = plan.removed + plan.dropped_before + len(plan.reembed_keys)
        in_place = bool(manifest.count) and spec == manifest.faiss_spec and ("HNSW" not in spec or not leaving)
        if expected and (rebuild or not in_place):  # an index updated in place is trained already
            check_trainable(spec, expected)
        report.factory_change = factory_change(manifest, factory, spec)
        if report.factory_change:
            logger.warning(
                "index %s: FAISS factory changes, %s: the FAISS index is rebuilt as the new type; "
                "to keep the old one, index with the factory %s",
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
            ImageFiles(rows, self._worker_transform(), cfg.max_image_pixels),
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            collate_fn=collate_decoded,
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


def _fill_report(report: IndexReport, plan: RunPlan, failed: list[tuple[ItemRow, str]]) -> None:
    """The run's counters: a failed re-embedding is neither added nor re-embedded, but dropped."""
    report.skipped += [(row.path, reason) for row, reason in failed]
    failed_keys = {row.key for row, _ in failed}
    embedded = {row.key for row in plan.to_embed} - failed_keys
    report.reembedded = len(embedded & plan.reembed_keys)
    report.added = len(embedded) - report.reembedded
    report.dropped = plan.dropped_before + len(failed_keys & plan.reembed_keys)
    report.removed = plan.removed
    report.metadata_updated = len(plan.updates)
