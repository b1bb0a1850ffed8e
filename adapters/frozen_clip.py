"""A frozen open_clip CLIP used as the vision (and text) backbone of the Q-Former models.

The project's Q-Former matcher and captioner both sit on a frozen CLIP, BLIP-2's recipe: this
module holds what they share — reading the CLIP's vision tokens and text token states, and the
vision side of their adapters (transform, batched features, feature shape), so both produce the
same features from the same CLIP and a feature cache can serve both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from PIL import Image
from torch import nn

from .open_clip_encoder import weights_digest


def clip_vision_tokens(clip: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1 + G*G, W): the CLIP vision tower's pooled token then its patch tokens."""
    visual = clip.visual
    previous = visual.output_tokens
    visual.output_tokens = True
    try:
        pooled, tokens = visual(pixels)  # (B, E) projected, (B, G*G, W)
    finally:
        visual.output_tokens = previous
    if pooled.shape[-1] != tokens.shape[-1]:
        pooled = pooled[..., : tokens.shape[-1]]  # keep one width; patch tokens carry the detail
    return torch.cat([pooled[:, None], tokens], dim=1)


def clip_text_states(clip: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """(T, L) token ids -> (T, L, W) the CLIP text tower's token states (what its pooling reads)."""
    length = ids.shape[1]  # may be shorter than the context: attention is causal, so the states are the same
    x = clip.token_embedding(ids)  # (T, L, W)
    x = x + clip.positional_embedding[:length].to(x.dtype)
    mask = clip.attn_mask[:length, :length] if clip.attn_mask is not None else None
    x = clip.transformer(x, attn_mask=mask)
    return clip.ln_final(x)


def heads_fingerprint(clip_fingerprint: str, heads: nn.Module, extra: str = "") -> str:
    """Digest of the CLIP's fingerprint, the heads' architecture (``heads.arch``) and weights, and ``extra``."""
    text = clip_fingerprint + json.dumps(asdict(heads.arch), sort_keys=True) + weights_digest(heads) + extra
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def new_qformer(
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    num_query_tokens: int,
    cross_attention_frequency: int,
    vision_width: int,
    dropout: float,
    **config: Any,
) -> tuple[nn.Module, nn.Parameter]:
    """A fresh ``transformers.Blip2QFormerModel`` cross-attending to ``vision_width``-wide vision
    tokens, and its (1, Q, hidden) learned query tokens. ``config``: further ``Blip2QFormerConfig``
    fields (``use_qformer_text_input``, ``max_position_embeddings``...).

    The Q-Former is built first, then the query tokens drawn (normal, std 0.02): the order fixes
    what a seeded run draws, so a model trained with this helper reproduces bit for bit.
    """
    from transformers import Blip2QFormerConfig, Blip2QFormerModel

    qformer = Blip2QFormerModel(
        Blip2QFormerConfig(
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size,
            cross_attention_frequency=cross_attention_frequency,
            encoder_hidden_size=vision_width,  # must equal the vision tokens' width (default 1408)
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            **config,
        )
    )
    # transformers initialises BLIP-2 query tokens to zeros (all queries alike forever): not here.
    query_tokens = nn.Parameter(torch.randn(1, num_query_tokens, hidden_size) * 0.02)
    return qformer, query_tokens


class FrozenClipVision:
    """The vision side of an adapter on a frozen CLIP: its transform, and batched vision tokens."""

    def __init__(
        self,
        clip: nn.Module,
        transform: Callable[[Image.Image], torch.Tensor],
        *,
        device: torch.device | None = None,
        batch_size: int = 64,
    ) -> None:
        self.device = device or torch.device("cpu")
        self.batch_size = batch_size
        self.clip = clip.eval().to(self.device)
        self._transform = transform
        with torch.inference_mode():
            size = int(getattr(clip.visual, "image_size", (64, 64))[0])
            probe = clip_vision_tokens(self.clip, torch.zeros(1, 3, size, size, device=self.device))
        self.feature_shape: tuple[int, ...] = tuple(probe.shape[1:])
        """Shape of one image's features: (tokens, width)."""

    @property
    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return self._transform

    @torch.inference_mode()
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed pixels -> (B, *feature_shape) float32 vision tokens (on CPU)."""
        out = [
            clip_vision_tokens(self.clip, pixels[i : i + self.batch_size].to(self.device)).float().cpu()
            for i in range(0, len(pixels), self.batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0, *self.feature_shape)

    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """PIL images -> (B, *feature_shape) features."""
        return self.image_features(torch.stack([self._transform(im.convert("RGB")) for im in images]))


def frozen(clip: nn.Module) -> nn.Module:
    """``clip`` in fp32 with gradients off (the Q-Former trains on top; the CLIP never does)."""
    clip = clip.float()
    for p in clip.parameters():
        p.requires_grad_(False)
    return clip


__all__ = [
    "FrozenClipVision",
    "clip_text_states",
    "clip_vision_tokens",
    "frozen",
    "heads_fingerprint",
    "new_qformer",
]
