"""Where the indexer's embedding work runs: the same contract for every engine.

An engine turns the rows a run must embed into :class:`EmbeddedBatch` es (row positions, vectors,
content hashes, failures) in any order; the indexer writes them to the store's ``pending`` table and
commits as it always does, so the store's guarantees (incremental by content hash, stable ids, a
killed run resumes, the previous generation stays readable) do not depend on the engine.

* ``local`` — this process encodes while DataLoader worker processes read, hash and decode (plain
  JPEGs on the encoder's GPU when it has one: :mod:`.gpu_decode`).
* ``ray`` — Ray Data decodes in tasks and encodes in an actor pool (:mod:`.ray_engine`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ...adapters.base import ImageTextEncoder
from ..config import IndexConfig
from .decode import ImageFiles, collate_decoded
from .gpu_decode import GpuReadyFiles, GpuResize, collate_gpu_ready, decode_on_device, gpu_resize_of
from .records import ItemRow

logger = logging.getLogger(__name__)


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


def on_cuda(encoder: ImageTextEncoder) -> bool:
    return getattr(getattr(encoder, "device", None), "type", "cpu") == "cuda"


def yield_to_encoder(worker_id: int) -> None:
    """DataLoader worker start-up when the encoder runs on the same CPU cores: decode at a lower priority,
    so the encoder's threads (which wait on one another at every layer) are not the ones preempted;
    the workers fill the gaps and keep a few batches ready."""
    try:
        os.nice(5)
    except OSError:  # not permitted here: run at the same priority
        pass


def local_image_batches(encoder: ImageTextEncoder, rows: list[ItemRow], config: IndexConfig) -> Iterator[EmbeddedBatch]:
    """Decode in DataLoader worker processes (JPEGs on the encoder's GPU, see :func:`decode_geometry`),
    encode here."""
    geometry = decode_geometry(encoder, config)
    if geometry is not None:
        yield from device_decoded_batches(encoder, rows, config, geometry)
        return
    loader = DataLoader(
        ImageFiles(rows, worker_transform(encoder), config.max_image_pixels, config.decode_timeout),
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        collate_fn=collate_decoded,
        prefetch_factor=4 if config.num_workers else None,
        pin_memory=on_cuda(encoder),
        worker_init_fn=None if on_cuda(encoder) else yield_to_encoder,
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


def decode_geometry(encoder: ImageTextEncoder, config: IndexConfig) -> GpuResize | None:
    """The resize to replay after decoding JPEGs on the encoder's device, or None to decode on the CPU:
    ``decode: gpu`` asks for it (on whatever device the encoder runs), ``auto`` takes it when the encoder
    is on CUDA; either needs a transform the device path reproduces (:func:`gpu_resize_of`)."""
    if config.decode == "cpu" or (config.decode == "auto" and not on_cuda(encoder)):
        return None
    geometry = gpu_resize_of(worker_transform(encoder))
    if geometry is None:
        logger.warning("decode: the encoder's transform is not resize + centre crop; decoding on the CPU")
    return geometry


def device_decoded_batches(
    encoder: ImageTextEncoder, rows: list[ItemRow], config: IndexConfig, geometry: GpuResize
) -> Iterator[EmbeddedBatch]:
    """Workers read, hash and sort files; plain JPEGs are decoded on the encoder's device in one call per
    batch, everything else was decoded by the worker as on the CPU path."""
    device = getattr(encoder, "device", torch.device("cpu"))
    loader = DataLoader(
        GpuReadyFiles(
            [r.path for r in rows], worker_transform(encoder), config.max_image_pixels, config.decode_timeout
        ),
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        collate_fn=collate_gpu_ready,
        prefetch_factor=4 if config.num_workers else None,
    )
    for batch in loader:
        failed = [(i, reason) for i, kind, _, _, reason in batch if kind == "failed"]
        jpegs = [(i, payload, sha) for i, kind, payload, sha, _ in batch if kind == "jpeg"]
        decoded, bad = decode_on_device([payload for _, payload, _ in jpegs], geometry, device)
        bad_at = {j for j, _ in bad}
        failed += [(jpegs[j][0], reason) for j, reason in bad]
        good = [(i, sha) for j, (i, _, sha) in enumerate(jpegs) if j not in bad_at]
        parts = [decoded] if decoded is not None else []
        on_cpu = [(i, px, sha) for i, kind, px, sha, _ in batch if kind == "pixels"]
        if decoded is not None:
            shape = tuple(decoded.shape[1:])
            failed += [
                (i, f"preprocessing gave shape {tuple(px.shape)}, not {shape}")
                for i, px, _ in on_cpu
                if tuple(px.shape) != shape
            ]
            on_cpu = [(i, px, sha) for i, px, sha in on_cpu if tuple(px.shape) == shape]
        if on_cpu:
            parts.append(torch.stack([px for _, px, _ in on_cpu]).to(device, non_blocking=True))
            good += [(i, sha) for i, _, sha in on_cpu]
        if not parts:
            yield EmbeddedBatch([], np.zeros((0, encoder.embed_dim), np.float32), [], failed)
            continue
        vectors = encoder.encode_image_tensors(torch.cat(parts) if len(parts) > 1 else parts[0])
        yield EmbeddedBatch([i for i, _ in good], np.asarray(vectors, np.float32), [s for _, s in good], failed)
