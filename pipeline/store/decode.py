"""Decoding workers of the indexer: read, hash, decode and preprocess image files in DataLoader
worker processes, and hand each batch over as one stacked tensor."""

from __future__ import annotations

import hashlib
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from .images import ImageDecodeError, decode_image
from .index_store import ItemRow


class ImageFiles(Dataset):
    """Reads, hashes, decodes and preprocesses image files (runs in DataLoader workers)."""

    def __init__(
        self,
        rows: list[ItemRow],
        transform: Callable[[Any], torch.Tensor],
        max_pixels: int,
        time_limit: float = 0.0,
    ) -> None:
        self.paths = [r.path for r in rows]
        self.transform = transform
        self.max_pixels = max_pixels
        self.time_limit = time_limit

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None, str | None]:
        pixels, sha, reason = read_and_decode(self.paths[i], self.transform, self.max_pixels, self.time_limit)
        return i, pixels, sha or None, reason or None


class DecodeTimeout(Exception):
    """An image took longer than the per-image time limit (raised by :func:`time_limit`'s alarm)."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`DecodeTimeout` in the block after ``seconds`` (SIGALRM: the main thread of a
    process, which DataLoader workers, Ray tasks and a worker-less indexer all decode in; elsewhere, or
    with ``seconds`` <= 0, no limit). The alarm interrupts Python code; PIL decodes in chunks it loops
    over in Python, so a slow decode is stopped between two chunks."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise DecodeTimeout(f"took longer than {seconds:g} s (index.decode_timeout)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def read_and_decode(
    path: str, transform: Callable[[Any], torch.Tensor], max_pixels: int, limit: float = 0.0
) -> tuple[Any, str, str]:
    """One image file -> (pixels or None, sha256, failure reason or ''): never raises for a bad file,
    and gives up on one whose decoding and preprocessing take longer than ``limit`` seconds (0: no limit)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return None, "", f"unreadable: {exc}"
    return decode_bytes(data, transform, max_pixels, limit)


def decode_bytes(
    data: bytes, transform: Callable[[Any], torch.Tensor], max_pixels: int, limit: float = 0.0
) -> tuple[Any, str, str]:
    """:func:`read_and_decode` for a file already read."""
    sha = hashlib.sha256(data).hexdigest()
    try:
        with time_limit(limit):
            return transform(decode_image(data, max_pixels)), sha, ""
    except DecodeTimeout as exc:
        return None, "", f"too slow: {exc}"
    except ImageDecodeError as exc:
        return None, "", str(exc)
    except OSError as exc:
        return None, "", f"unreadable: {exc}"
    except Exception as exc:  # a transform failing on an odd image must not stop the run
        return None, "", f"preprocessing failed: {exc!r}"


@dataclass
class DecodedBatch:
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

    def pin_memory(self) -> DecodedBatch:
        """Called by the DataLoader when pinning (CUDA encoders): page-locked pixels copy faster."""
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        return self


def collate_decoded(batch: list[tuple[int, torch.Tensor | None, str | None, str | None]]) -> DecodedBatch:
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
    return DecodedBatch([i for i, _, _ in decoded], pixels, [sha or "" for _, _, sha in decoded], failed)
