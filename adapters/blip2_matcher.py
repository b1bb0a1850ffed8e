"""The ``blip2`` matcher: stock ``transformers.Blip2ForImageTextRetrieval`` as an ``ImageTextMatcher``.

Loading, preprocessing and fingerprints are :mod:`.blip2_loading`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .base import MatchScores
from .blip2_loading import MATCHER_CLASS, Blip2ImageTransform, load_checkpoint
from .entries import ModelEntry
from .open_clip_encoder import ModelLoadError


class Blip2Matcher:
    """The ``ImageTextMatcher`` over ``transformers.Blip2ForImageTextRetrieval``.

    Features are the vision model's last hidden state (B, N, W); :meth:`match` computes ITM and ITC
    from them with the model's own Q-Former, embeddings, projections and ITM head, exactly as
    ``Blip2ForImageTextRetrieval.forward`` does, without rerunning the vision model.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        name: str,
        fingerprint: str,
        device: torch.device | None = None,
        batch_size: int = 64,
        max_text_tokens: int | None = None,
    ) -> None:
        self.name = name
        self.fingerprint = fingerprint
        self.device = device or torch.device("cpu")
        self.batch_size = batch_size
        self.model = model.eval().to(self.device)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self._transform = Blip2ImageTransform.from_image_processor(processor.image_processor)
        config = model.config
        vision = config.vision_config
        if (self._transform.height, self._transform.width) != (vision.image_size, vision.image_size):
            raise ModelLoadError(
                f"model {name!r}: the processor resizes images to {self._transform.height}x{self._transform.width} "
                f"but the vision model expects {vision.image_size}x{vision.image_size}"
            )
        self.feature_shape: tuple[int, ...] = ((vision.image_size // vision.patch_size) ** 2 + 1, vision.hidden_size)
        limit = int(config.qformer_config.max_position_embeddings)
        model_max = getattr(self.tokenizer, "model_max_length", None) or limit
        self.max_text_tokens = int(min(max_text_tokens or limit, limit, model_max))

    @property
    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return self._transform

    @property
    def _vision_dtype(self) -> torch.dtype:
        return next(self.model.vision_model.parameters()).dtype

    @torch.inference_mode()
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        out = []
        for lo in range(0, len(pixels), self.batch_size):
            batch = pixels[lo : lo + self.batch_size].to(self.device, self._vision_dtype)
            out.append(self.model.vision_model(pixel_values=batch).last_hidden_state.float().cpu())
        return torch.cat(out) if out else torch.zeros(0, *self.feature_shape)

    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> (B, *feature_shape) features."""
        if not images:
            return torch.zeros(0, *self.feature_shape)
        return self.image_features(torch.stack([self._transform(im) for im in images]))

    def _tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> (T, L) input ids and attention mask, as the processor's text part makes them
        (no image tokens: ``forward`` strips those before the Q-Former anyway)."""
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_text_tokens,
            return_token_type_ids=False,
            return_tensors="pt",
        )
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def _text_embeds(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(T, L) -> (T, D) normalised ITC text embeddings (``forward``'s ITC branch, text side)."""
        m = self.model
        out = m.qformer(query_embeds=m.embeddings(input_ids=ids), query_length=0, attention_mask=mask)
        states = out.last_hidden_state.to(dtype=m.text_projection.weight.dtype)
        return F.normalize(m.text_projection(states[:, 0, :]), dim=-1)

    def _check_features(self, features: torch.Tensor) -> None:
        if features.ndim != 3 or tuple(features.shape[1:]) != self.feature_shape:
            raise ValueError(
                f"features must be (B, {', '.join(map(str, self.feature_shape))}), got {tuple(features.shape)}"
            )

    def _image_itc(self, image_embeds: torch.Tensor, image_mask: torch.Tensor) -> torch.Tensor:
        """(b, N, W) vision states -> (b, Q, D) normalised query embeddings (``forward``'s ITC, image side)."""
        m = self.model
        queries = m.qformer(
            query_embeds=m.query_tokens.expand(len(image_embeds), -1, -1),
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_mask,
        ).last_hidden_state.to(dtype=m.vision_projection.weight.dtype)
        return F.normalize(m.vision_projection(queries), dim=-1)

    def _itm(
        self, image_embeds: torch.Tensor, image_mask: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """ITM probabilities: queries + text through the Q-Former, cross-attending to the image; the
        head averaged over the query outputs."""
        m = self.model
        b, n_query = len(image_embeds), m.query_tokens.shape[1]
        pair_mask = torch.cat([torch.ones(b, n_query, dtype=mask.dtype, device=self.device), mask], dim=1)
        out = m.qformer(
            query_embeds=m.embeddings(input_ids=ids, query_embeds=m.query_tokens.expand(b, -1, -1)),
            query_length=n_query,
            attention_mask=pair_mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_mask,
        ).last_hidden_state.to(dtype=m.itm_head.weight.dtype)
        logits = m.itm_head(out[:, :n_query, :]).mean(dim=1)  # (b, 2)
        return logits.float().softmax(dim=-1)[:, 1].cpu()

    def _batches(self, features: torch.Tensor) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """(start, (b, N, W) vision states on the device, (b, N) mask) per batch."""
        for lo in range(0, len(features), self.batch_size):
            image_embeds = features[lo : lo + self.batch_size].to(self.device, self._vision_dtype)
            yield lo, image_embeds, torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)

    @torch.inference_mode()
    def image_embeds(self, features: torch.Tensor) -> torch.Tensor:
        self._check_features(features)
        out = [self._image_itc(v, m).float().cpu() for _, v, m in self._batches(features)]
        n_query, dim = self.model.query_tokens.shape[1], self.model.vision_projection.out_features
        return torch.cat(out) if out else torch.zeros(0, n_query, dim)

    @torch.inference_mode()
    def text_embeds(self, texts: Sequence[str]) -> torch.Tensor:
        return self._text_embeds(*self._tokenize(texts)).float().cpu()

    @torch.inference_mode()
    def itm(self, features: torch.Tensor, text: str) -> np.ndarray:
        self._check_features(features)
        ids, mask = self._tokenize([text])
        out = [self._itm(v, m, ids.expand(len(v), -1), mask.expand(len(v), -1)) for _, v, m in self._batches(features)]
        return torch.cat(out).numpy() if out else np.zeros(0, np.float32)

    @torch.inference_mode()
    def match(self, features: torch.Tensor, texts: Sequence[str]) -> MatchScores:
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        self._check_features(features)
        n = len(features)
        if n == 0:
            return MatchScores(np.zeros(0, np.float32), np.zeros(0, np.float32))
        if len(texts) not in (1, n):
            raise ValueError(f"give one text or one per image ({n}), got {len(texts)}")
        ids, mask = self._tokenize(texts)
        shared = len(texts) == 1
        shared_embeds = self._text_embeds(ids, mask) if shared else None
        itm, itc = [], []
        for lo, image_embeds, image_mask in self._batches(features):
            b = len(image_embeds)
            if shared:
                ids_b, mask_b, text_embeds = ids.expand(b, -1), mask.expand(b, -1), shared_embeds.expand(b, -1)
            else:
                ids_b, mask_b = ids[lo : lo + b], mask[lo : lo + b]
                text_embeds = self._text_embeds(ids_b, mask_b)
            itm.append(self._itm(image_embeds, image_mask, ids_b, mask_b))
            image_itc = self._image_itc(image_embeds, image_mask)  # (b, Q, D)
            sims = torch.einsum("bqd,bd->bq", image_itc, text_embeds.to(image_itc.dtype)).amax(dim=-1)
            itc.append(sims.float().cpu())
        return MatchScores(torch.cat(itm).numpy(), torch.cat(itc).numpy())


def load_blip2_matcher(entry: ModelEntry) -> Blip2Matcher:
    """Load a ``blip2`` entry: a ``Blip2ForImageTextRetrieval`` checkpoint and its processor."""
    loaded = load_checkpoint(entry, MATCHER_CLASS)
    return Blip2Matcher(
        loaded.model,
        loaded.processor,
        name=entry.name,
        fingerprint=loaded.fingerprint,
        device=loaded.device,
        batch_size=entry.batch_size,
    )


__all__ = ["Blip2Matcher", "load_blip2_matcher"]
