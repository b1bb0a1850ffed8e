"""Protocols that every model family's adapter implements.

Stages receive one of these objects through their constructor and never build a model
themselves, so each stage can be tested with a fake.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass
class MatchScores:
    """Scores of image-text pairs from a cross-attention matcher."""

    itm: np.ndarray
    """(B,) probability that each pair matches (the ITM head's softmax)."""
    itc: np.ndarray
    """(B,) image-text contrastive similarity (cosine, best query token), in [-1, 1]."""


@runtime_checkable
class ImageTextMatcher(Protocol):
    """A BLIP-2 style matcher: cross-attention ITM and contrastive ITC scores for image-text pairs.

    Image features (what :meth:`image_features` returns) are what a feature cache stores, so a query
    reranks cached candidates without decoding or re-encoding them.
    """

    name: str
    fingerprint: str
    """Digest of architecture + weights (+ the vision tower's); caches are keyed by it."""
    feature_shape: tuple[int, ...]
    """Shape of one image's features, e.g. (65, 128): (tokens, width)."""

    @property
    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        """Picklable PIL -> (3, H, W) tensor transform."""
        ...

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed pixels -> (B, *feature_shape) float32 features (on CPU)."""
        ...

    def match(self, features: torch.Tensor, texts: Sequence[str]) -> MatchScores:
        """Score ``features`` (B, *feature_shape) against ``texts``: one text for all, or one per image."""
        ...

    def image_embeds(self, features: torch.Tensor) -> torch.Tensor:
        """(B, *feature_shape) -> (B, Q, D) L2-normalised query embeddings for ITC (small: cacheable)."""
        ...

    def text_embeds(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> (T, D) L2-normalised ITC text embeddings."""
        ...

    def itm(self, features: torch.Tensor, text: str) -> np.ndarray:
        """(B,) ITM match probability of each image's ``features`` with one ``text``."""
        ...


def itc_scores(image_embeds: torch.Tensor, text_embed: torch.Tensor) -> np.ndarray:
    """(B, Q, D) image query embeddings, (D,) one text's embedding -> (B,) ITC scores: the best
    query token's cosine similarity, as BLIP-2 scores ITC."""
    if len(image_embeds) == 0:
        return np.zeros(0, np.float32)
    sims = torch.einsum("bqd,d->bq", image_embeds.float(), text_embed.float().to(image_embeds.device))
    return sims.amax(dim=-1).cpu().numpy()


@runtime_checkable
class ImageCaptioner(Protocol):
    """Describes images in words."""

    name: str
    fingerprint: str

    @property
    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]: ...

    def caption(self, pixels: torch.Tensor, **decoding: object) -> list[str]:
        """(B, 3, H, W) preprocessed pixels -> B captions."""
        ...
