"""One served index: its pipeline, what it can do, and its items' files, found by item id only.

A file's path always comes from the index store, never from a request, and it must resolve (links
followed) inside the collection's root: the folder indexed, or the folder of the JSONL manifest.
A link inside the collection that points out of it is refused like a missing file.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..stages.caption import Captioner
from ..stages.registry import has_stage
from ..stages.runner import Pipeline
from ..store.images import IMAGE_EXTENSIONS, ImageDecodeError, decode_image
from ..store.index_store import IndexStore
from ..store.records import ItemRow
from .errors import NotFoundError

logger = logging.getLogger(__name__)


def collection_root(source: str) -> Path:
    """The folder an index's items must lie in: its source folder, or its manifest's folder."""
    path = Path(source)
    return (path if path.is_dir() else path.parent).resolve()


@dataclass
class Replica:
    """One copy of an index's pipeline, with its own models, caches and store connection, and the
    one thread that runs it (one query at a time); copies run side by side."""

    pipeline: Pipeline
    executor: ThreadPoolExecutor
    pending: int = 0
    """Jobs given to it and not finished (the pool counts them)."""


@dataclass
class ServedIndex:
    """An index under a name, with the pipelines that search it.

    Each copy of the pipeline (``replicas``) has its own thread: a pipeline's models, caches and
    store connection are never shared between threads, and two queries on one index still run at
    once. A feedback session or dialogue keeps the copy it started on (its state refers to it). Item
    lookups use a connection of their own (``lookup``), so pictures load while queries run. All of
    them read the committed generation at each use: a ``viewfinder index`` run that commits a new
    one is picked up by the next request, and a half-written one is never read.
    """

    name: str
    path: Path
    replicas: list[Replica]
    lookup: IndexStore
    root: Path
    modality: str
    """``image`` or ``text`` (an index never changes it)."""
    lookup_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, name: str, path: str | Path, preset: Any = None, copies: int = 1) -> ServedIndex:
        """The index at ``path`` with ``copies`` pipelines of ``preset`` (None: the one it was built with)."""
        path = Path(path).expanduser()
        replicas = [
            Replica(Pipeline.from_preset(preset, index=path), ThreadPoolExecutor(1, f"viewfinder-{name}-{i}"))
            for i in range(copies)
        ]
        lookup = IndexStore.open(path)
        manifest = lookup.manifest
        return cls(name, path, replicas, lookup, collection_root(manifest.source), manifest.modality)

    def close(self) -> None:
        for replica in self.replicas:
            replica.executor.shutdown(wait=False, cancel_futures=True)
            replica.pipeline.store.close()
        self.lookup.close()

    @property
    def pipeline(self) -> Pipeline:
        """The first copy (what the index's stages and settings are read from)."""
        return self.replicas[0].pipeline

    def least_busy(self) -> Replica:
        """The copy with the fewest jobs waiting (a new query, or a new session, goes there)."""
        return min(self.replicas, key=lambda r: r.pending)

    # ------------------------------------------------------------------ what it is
    @property
    def stage_names(self) -> list[str]:
        return [str(getattr(stage, "name", type(stage).__name__)) for stage in self.pipeline.stages]

    def describe(self) -> dict[str, Any]:
        with self.lookup_lock:
            manifest = self.lookup.manifest
        return {
            "name": self.name,
            "count": manifest.count,
            "generation": manifest.generation,
            "modality": self.modality,
            "preset": self.pipeline.name,
            "stages": self.stage_names,
            "composes": self.pipeline.composes,
            "reads_feedback": has_stage(self.stage_names, reads_feedback=True),
            "dialogue": True,  # the model-free questioner and reformulator work over any pipeline
            "captions": self.captioner is not None,
        }

    @property
    def captioner(self) -> Captioner | None:
        """The captioner of the pipeline's caption stage, if it has one."""
        return self.captioner_of(self.replicas[0])

    @staticmethod
    def captioner_of(replica: Replica) -> Captioner | None:
        for stage in replica.pipeline.stages:
            captioner = getattr(stage, "captioner", None)
            if isinstance(captioner, Captioner):
                return captioner
        return None

    # ------------------------------------------------------------------ items
    def item(self, item_id: int) -> ItemRow:
        with self.lookup_lock:
            row = self.lookup.items_by_id([item_id]).get(item_id)
        if row is None:
            raise NotFoundError(f"index {self.name!r} holds no item {item_id}")
        return row

    def media_path(self, row: ItemRow) -> Path:
        """The item's image file, resolved; :class:`NotFoundError` unless it is an image file inside
        the collection's root."""
        if self.modality != "image":
            raise NotFoundError(f"index {self.name!r} holds texts: item {row.id} has no image")
        missing = NotFoundError(f"the image of item {row.id} is not in the collection (moved or removed?)")
        try:
            path = Path(row.path).resolve(strict=True)
        except (OSError, RuntimeError):  # gone, or a loop of links
            raise missing from None
        if not path.is_relative_to(self.root) or not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            if not path.is_relative_to(self.root):
                logger.warning("item %d of %s resolves outside %s: refused", row.id, self.name, self.root)
            raise missing
        return path

    def caption(self, row: ItemRow, replica: Replica | None = None) -> tuple[str | None, str | None]:
        """(caption, where it came from): the captioner of ``replica``'s pipeline (through its cache),
        else the item's own text from the collection; (None, None) when there is neither. With a
        captioner, call it on ``replica``'s thread."""
        captioner = self.captioner_of(replica or self.replicas[0])
        if captioner is not None:
            made, _, _ = captioner.captions([(row.id, str(self.media_path(row)))])
            if made.get(row.id):
                return made[row.id], "captioner"
        if row.text:
            return row.text, "collection"
        return None, None


class Thumbnails:
    """Small JPEGs of items, made on first request and kept (least recently used dropped first)."""

    def __init__(self, max_side: int, capacity: int, max_pixels: int) -> None:
        self.max_side = max_side
        self.capacity = capacity
        self.max_pixels = max_pixels
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, served: ServedIndex, row: ItemRow) -> bytes:
        key = (served.name, row.id, row.sha256, row.size, row.mtime_ns)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        path = served.media_path(row)
        try:
            image = decode_image(path.read_bytes(), self.max_pixels)
        except ImageDecodeError as exc:
            raise NotFoundError(f"the image of item {row.id} cannot be read: {exc}") from exc
        image.thumbnail((self.max_side, self.max_side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=85)
        data = buf.getvalue()
        if self.capacity:
            with self._lock:
                self._cache[key] = data
                while len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)
        return data
