"""Incremental indexing of a source (folder or JSONL manifest) into an :class:`IndexStore`.

Embedding runs on an engine (:mod:`.engines`: DataLoader workers decoding for this process, or Ray
Data); embeddings are checkpointed in batches into the store's ``pending`` table, so a killed run
resumes, whichever engine computed them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...adapters.base import ImageTextEncoder
from ..config import IndexConfig
from ..progress import progress_bar
from .commit import next_spec
from .engines import EmbeddedBatch, local_image_batches, local_text_batches
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
            replace_damaged=rebuild,
        ) as store:
            self._check_store(store, modality, source_str, rebuild)
            if not rebuild and store.manifest.count:
                _ = store.index  # a damaged or missing FAISS file is found now, not reported as "unchanged"
            store.prepare_run(enc.fingerprint, rebuild)
            plan = plan_run(store, listing.items, rebuild)
            self._check_plan(store, plan, report, rebuild)
            embed_start = time.perf_counter()
            failed = self._embed(store, plan.to_embed, modality)
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
                target_recall=self.config.target_recall,
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

    def _batches(self, rows: list[ItemRow], modality: Modality) -> Iterator[EmbeddedBatch]:
        """The embeddings of ``rows`` from the configured engine (see :mod:`.engines`)."""
        if self.config.engine == "ray":
            from .ray_engine import ray_batches

            return ray_batches(self.encoder, rows, self.config, modality)
        if modality == "image":
            return local_image_batches(self.encoder, rows, self.config)
        return local_text_batches(self.encoder, rows, self.config)

    def _embed(self, store: IndexStore, rows: list[ItemRow], modality: Modality) -> list[tuple[ItemRow, str]]:
        """Embed ``rows`` into ``pending``, checkpointing every ``checkpoint_every`` items; returns the rows
        that failed, with the reason."""
        if not rows:
            return []
        failed: list[tuple[ItemRow, str]] = []
        buffer: list[PendingRow] = []
        what, unit = ("images", "img") if modality == "image" else ("texts", "txt")
        with progress_bar(f"embedding {what}", len(rows), unit, self.progress) as bar:
            for batch in self._batches(rows, modality):
                for i, reason in batch.failed:
                    failed.append((rows[i], reason))
                    buffer.append(PendingRow(rows[i], None, reason))
                for i, sha, vec in zip(batch.good, batch.shas, batch.vectors, strict=True):
                    if sha:
                        rows[i].sha256 = sha
                    buffer.append(PendingRow(rows[i], vec))
                if len(buffer) >= self.config.checkpoint_every:
                    store.add_pending(buffer)
                    buffer.clear()
                bar.advance(batch.size)
        if buffer:
            store.add_pending(buffer)
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
