"""Protocols that every model family's adapter implements.

Stages receive one of these objects through their constructor and never build a model
themselves, so each stage can be tested with a fake.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image


@runtime_checkable
class ImageTextEncoder(Protocol):
    """A dual-tower encoder (CLIP / ALIGN style) that maps images and texts to one space."""

    name: str
    """Human-readable name of the model entry it was loaded from."""
    embed_dim: int
    """Dimension D of the (L2-normalised) embeddings."""
    context_length: int
    """Maximum number of text tokens, start and end tokens included."""
    fingerprint: str
    """Digest of architecture + preprocessing + weights; indexes record it."""

    @property
    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """Picklable PIL -> (3, H, W) float tensor transform (safe to run in worker processes)."""
        ...

    def encode_image_tensors(self, pixels: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) preprocessed tensor -> (B, D) float32, L2-normalised."""
        ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """PIL images -> (B, D) float32, L2-normalised."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> (B, D) float32, L2-normalised. Texts longer than the context are truncated."""
        ...

    def count_tokens(self, text: str) -> int:
        """Number of tokens `text` needs, start and end tokens included."""
        ...
