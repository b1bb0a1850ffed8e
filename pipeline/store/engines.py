"""Where the indexer's embedding work runs: the same contract for every engine.

An engine turns the rows a run must embed into :class:`EmbeddedBatch` es (row positions, vectors,
content hashes, failures) in any order; the indexer writes them to the store's ``pending`` table and
commits as it always does, so the store's guarantees (incremental by content hash, stable ids, a
killed run resumes, the previous generation stays readable) do not depend on the engine.

* ``local`` — this process encodes while DataLoader worker processes read, hash and decode.
* ``ray`` — Ray Data decodes in tasks and encodes in an actor pool (:mod:`.ray_engine`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ...adapters.base import ImageTextEncoder
from ..config import IndexConfig
from .decode import ImageFiles, collate_decoded
from .records import ItemRow

ENGINES = ("local", "ray")


@dataclass
class EmbeddedBatch:
    """Embeddings of some of a run's rows, and the rows that failed."""

    good: list[int]
    """Positions (in the run's row list) of the embedded rows, in ``vectors`` order."""
    vectors: np.ndarray
    """(G, D) float32, L2-normalised."""
    shas: list[str]
    """SHA-256 of each embedded file (empty strings for texts)."""
    failed: list[tuple[int, str]]
    """(position, reason) of rows that could not be read."""

    @property
    def size(self) -> int:
        return len(self.good) + len(self.failed)


def worker_transform(encoder: ImageTextEncoder) -> Callable[[Any], torch.Tensor]:
    """What decoding workers run: the encoder's uint8 transform when it offers one (normalisation then
    happens in ``encode_image_tensors``, on the device, and 4x fewer bytes cross processes), else its
    float transform."""
    return getattr(encoder, "uint8_image_transform", None) or encoder.image_transform


def local_image_batches(encoder: ImageTextEncoder, rows: list[ItemRow], config: IndexConfig) -> Iterator[EmbeddedBatch]:
    """Decode in DataLoader worker processes, encode here."""
    loader = DataLoader(
        ImageFiles(rows, worker_transform(encoder), config.max_image_pixels),
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        collate_fn=collate_decoded,
        prefetch_factor=4 if config.num_workers else None,
        pin_memory=getattr(getattr(encoder, "device", None), "type", "cpu") == "cuda",
    )
    dim = encoder.embed_dim
    for batch in loader:
        vectors = encoder.encode_image_tensors(batch.pixels) if batch.pixels is not None else np.zeros((0, dim))
        yield EmbeddedBatch(batch.good, np.asarray(vectors, np.float32), batch.shas, batch.failed)


def local_text_batches(encoder: ImageTextEncoder, rows: list[ItemRow], config: IndexConfig) -> Iterator[EmbeddedBatch]:
    """Encode captions here, a batch at a time (nothing fails)."""
    for start in range(0, len(rows), config.batch_size):
        chunk = rows[start : start + config.batch_size]
        vectors = encoder.encode_texts([r.text or "" for r in chunk])  # (B, D)
        positions = list(range(start, start + len(chunk)))
        yield EmbeddedBatch(positions, np.asarray(vectors, np.float32), [""] * len(chunk), [])
