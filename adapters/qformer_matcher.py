"""A BLIP-2 Q-Former matcher on a frozen CLIP (the ``qformer_clip`` family).

BLIP-2's stage-1 recipe: a frozen, already-trained image encoder, and a Q-Former
(``transformers.Blip2QFormerModel``) trained on top with image-text contrast (ITC) and matching
(ITM). Here the frozen encoder is an open_clip CLIP (the zoo's scene CLIP by default): its vision
tower's tokens feed the Q-Former's cross-attention, and its text tower's token states, projected,
are the Q-Former's text input, so the matcher needs no tokenizer or word embeddings of its own.

A model folder holds ``qformer_config.json`` (architecture + which CLIP entry it sits on) and
``qformer.safetensors`` (the Q-Former heads only; the CLIP comes from its own entry).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .base import MatchScores
from .entries import ConfigError, ModelEntry, from_dict
from .frozen_clip import (
    FrozenClipVision,
    clip_text_states,
    clip_vision_width,
    frozen,
    heads_fingerprint,
    new_qformer,
)

logger = logging.getLogger(__name__)

CONFIG_FILE = "qformer_config.json"
WEIGHTS_FILE = "qformer.safetensors"


@dataclass
class QFormerArch:
    """Architecture of the Q-Former heads (data: saved in ``qformer_config.json``)."""

    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 768
    num_query_tokens: int = 16
    cross_attention_frequency: int = 1
    """A cross-attention block every this many layers (BLIP-2 uses 2; small models learn faster with 1)."""
    embed_dim: int = 128
    """Dimension of the ITC projections."""
    max_text_tokens: int = 40
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError("qformer: 'hidden_size' must be a multiple of 'num_heads'")
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "num_query_tokens", "embed_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"qformer: field {name!r} must be >= 1")


class QFormerHeads(nn.Module):
    """Query tokens, the Q-Former, text input projection, ITC projections and the ITM head."""

    def __init__(self, arch: QFormerArch, vision_width: int, text_width: int) -> None:
        super().__init__()
        self.arch = arch
        self.qformer, self.query_tokens = new_qformer(
            hidden_size=arch.hidden_size,
            num_layers=arch.num_layers,
            num_heads=arch.num_heads,
            intermediate_size=arch.intermediate_size,
            num_query_tokens=arch.num_query_tokens,
            cross_attention_frequency=arch.cross_attention_frequency,
            vision_width=vision_width,
            dropout=arch.dropout,
            use_qformer_text_input=True,  # layers get a text feed-forward path
            max_position_embeddings=arch.max_text_tokens,
        )
        self.text_in = nn.Linear(text_width, arch.hidden_size)
        self.text_pos = nn.Embedding(arch.max_text_tokens, arch.hidden_size)
        self.vision_projection = nn.Linear(arch.hidden_size, arch.embed_dim)
        self.text_projection = nn.Linear(arch.hidden_size, arch.embed_dim)
        self.itm_head = nn.Linear(arch.hidden_size, 2)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def query_states(self, vision: torch.Tensor) -> torch.Tensor:
        """(B, N, W) vision tokens -> (B, Q, H) query outputs."""
        queries = self.query_tokens.expand(vision.shape[0], -1, -1)
        return self.qformer(query_embeds=queries, encoder_hidden_states=vision).last_hidden_state

    def text_inputs(self, text_states: torch.Tensor) -> torch.Tensor:
        """(T, L, Wt) frozen CLIP token states -> (T, L, H) Q-Former text inputs."""
        positions = torch.arange(text_states.shape[1], device=text_states.device)
        return self.text_in(text_states) + self.text_pos(positions)[None]

    def image_embeds(self, vision: torch.Tensor) -> torch.Tensor:
        """(B, N, W) -> (B, Q, D) L2-normalised query embeddings for ITC."""
        return F.normalize(self.vision_projection(self.query_states(vision)), dim=-1)

    def text_embeds(self, text_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(T, L, Wt), (T, L) -> (T, D) L2-normalised text embeddings (first token's output) for ITC."""
        out = self.qformer(query_embeds=self.text_inputs(text_states), query_length=0, attention_mask=mask)
        return F.normalize(self.text_projection(out.last_hidden_state[:, 0]), dim=-1)

    @staticmethod
    def itc_similarity(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """(B, Q, D), (T, D) -> (B, T): the best query token's cosine similarity (as in BLIP-2)."""
        return torch.einsum("bqd,td->btq", image_embeds, text_embeds).amax(-1)

    def itm_logits(self, vision: torch.Tensor, text_states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pairs: (P, N, W) vision tokens, (P, L, Wt) text states, (P, L) mask -> (P, 2) match logits."""
        n_query = self.query_tokens.shape[1]
        queries = self.query_tokens.expand(vision.shape[0], -1, -1)
        embeds = torch.cat([queries, self.text_inputs(text_states)], dim=1)  # (P, Q + L, H)
        full_mask = torch.cat([torch.ones(mask.shape[0], n_query, dtype=mask.dtype, device=mask.device), mask], 1)
        out = self.qformer(
            query_embeds=embeds, query_length=n_query, attention_mask=full_mask, encoder_hidden_states=vision
        ).last_hidden_state
        return self.itm_head(out[:, :n_query]).mean(dim=1)  # (P, 2), averaged over query tokens


def text_mask(ids: torch.Tensor) -> torch.Tensor:
    """(T, L) ids -> (T, L) 1 where a token is present (open_clip pads with 0)."""
    return (ids != 0).long()


class QFormerMatcher(FrozenClipVision):
    """The ``ImageTextMatcher`` over a frozen open_clip CLIP plus trained :class:`QFormerHeads`."""

    def __init__(
        self,
        clip: nn.Module,
        transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Any,
        heads: QFormerHeads,
        *,
        name: str,
        clip_fingerprint: str,
        device: torch.device | None = None,
        batch_size: int = 64,
    ) -> None:
        super().__init__(clip, transform, device=device, batch_size=batch_size)
        self.name = name
        self.heads = heads.eval().to(self.device)
        self.tokenizer = tokenizer
        self.fingerprint = heads_fingerprint(clip_fingerprint, heads)

    def _text_states(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> (T, L, W) frozen CLIP token states and (T, L) mask, padding columns no text uses dropped."""
        ids = self.tokenizer(list(texts)).to(self.device)  # (T, context)
        used = int((ids != 0).sum(1).max())
        ids = ids[:, : max(1, min(used, self.heads.arch.max_text_tokens))]
        return clip_text_states(self.clip, ids), text_mask(ids)

    @torch.inference_mode()
    def image_embeds(self, features: torch.Tensor) -> torch.Tensor:
        out = [
            self.heads.image_embeds(features[lo : lo + self.batch_size].to(self.device, torch.float32)).float().cpu()
            for lo in range(0, len(features), self.batch_size)
        ]
        arch = self.heads.arch
        return torch.cat(out) if out else torch.zeros(0, arch.num_query_tokens, arch.embed_dim)

    @torch.inference_mode()
    def text_embeds(self, texts: Sequence[str]) -> torch.Tensor:
        return self.heads.text_embeds(*self._text_states(texts)).float().cpu()

    @torch.inference_mode()
    def itm(self, features: torch.Tensor, text: str) -> np.ndarray:
        return self.match_itm(features, [text])

    @torch.inference_mode()
    def match_itm(self, features: torch.Tensor, texts: Sequence[str]) -> np.ndarray:
        """(B,) ITM probabilities against one text for all images, or one per image."""
        if len(texts) not in (1, len(features)):
            raise ValueError(f"give one text or one per image ({len(features)}), got {len(texts)}")
        states, mask = self._text_states(texts)
        out = []
        for lo in range(0, len(features), self.batch_size):
            vision = features[lo : lo + self.batch_size].to(self.device, torch.float32)  # (b, N, W)
            if len(texts) == 1:
                s, m = states.expand(len(vision), -1, -1), mask.expand(len(vision), -1)
            else:
                s, m = states[lo : lo + len(vision)], mask[lo : lo + len(vision)]
            out.append(self.heads.itm_logits(vision, s, m).softmax(-1)[:, 1].float().cpu())
        return torch.cat(out).numpy() if out else np.zeros(0, np.float32)

    @torch.inference_mode()
    def match(self, features: torch.Tensor, texts: Sequence[str]) -> MatchScores:
        if len(texts) not in (1, len(features)):
            raise ValueError(f"give one text or one per image ({len(features)}), got {len(texts)}")
        itm = self.match_itm(features, texts)
        images, words = self.image_embeds(features), self.text_embeds(texts)  # (B, Q, D), (T, D)
        sims = torch.einsum("bqd,bd->bq", images, words.expand(len(images), -1) if len(texts) == 1 else words)
        return MatchScores(itm, sims.amax(-1).numpy() if len(images) else np.zeros(0, np.float32))


# ---------------------------------------------------------------------------------------- files
def save_qformer_dir(
    heads: QFormerHeads, folder: Path, *, encoder_entry: str | dict[str, Any], fp16: bool = True
) -> Path:
    """Write ``heads`` as a model folder: config (arch + the CLIP entry it sits on) and weights."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if fp16 and v.is_floating_point() else v).contiguous() for k, v in heads.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    config = {"arch": asdict(heads.arch), "encoder": encoder_entry}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def read_qformer_dir(entry: ModelEntry) -> tuple[QFormerArch, Any, dict[str, torch.Tensor]]:
    """A ``qformer_clip`` model folder's architecture, CLIP entry reference and float32 weights
    (checked against the entry's sha256 when it gives one)."""
    from safetensors.torch import load_file

    from .open_clip_encoder import ModelLoadError, sha256_file

    folder = entry.local_folder()
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        hint = "reinstall viewfinder" if entry.weights == "zoo" else "train one with `viewfinder train reranker`"
        raise ModelLoadError(f"model {entry.name!r}: {folder} has no {CONFIG_FILE} and {WEIGHTS_FILE}: {hint}")
    if entry.sha256 and sha256_file(folder / WEIGHTS_FILE) != entry.sha256:
        raise ModelLoadError(f"model {entry.name!r}: checksum mismatch for {folder / WEIGHTS_FILE}: reinstall it")
    config = json.loads((folder / CONFIG_FILE).read_text())
    arch = from_dict(QFormerArch, config["arch"], str(folder / CONFIG_FILE))
    state = {k: v.float() for k, v in load_file(str(folder / WEIGHTS_FILE)).items()}
    return arch, config["encoder"], state


def load_qformer_matcher(entry: ModelEntry) -> QFormerMatcher:
    """Load a ``qformer_clip`` entry: the CLIP its config names, then the Q-Former heads."""
    from .open_clip_encoder import pick_device
    from .registry import load_encoder

    arch, encoder_ref, state = read_qformer_dir(entry)
    encoder = load_encoder(encoder_ref)
    clip = frozen(encoder.model)
    heads = QFormerHeads(arch, vision_width=clip_vision_width(clip), text_width=int(clip.transformer.width))
    heads.load_state_dict(state)
    return QFormerMatcher(
        clip,
        encoder.image_transform,
        encoder.tokenizer,
        heads,
        name=entry.name,
        clip_fingerprint=encoder.fingerprint,
        device=pick_device(entry.device),
        batch_size=entry.batch_size,
    )


__all__ = [
    "QFormerArch",
    "QFormerHeads",
    "QFormerMatcher",
    "load_qformer_matcher",
    "read_qformer_dir",
    "save_qformer_dir",
    "text_mask",
]
