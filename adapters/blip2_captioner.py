"""The ``blip2_captioner`` captioner: stock ``transformers.Blip2ForConditionalGeneration`` (batched
``generate``) as an ``ImageCaptioner``.

Loading, preprocessing and fingerprints are :mod:`.blip2_loading`'s; decoding options are checked
by :func:`.decoding.check_decoding`, as for every captioner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from PIL import Image

from .blip2_loading import CAPTIONER_CLASS, Blip2ImageTransform, load_checkpoint
from .decoding import check_decoding
from .entries import ModelEntry
from .open_clip_encoder import ModelLoadError

DECODING_DEFAULTS: dict[str, Any] = {"max_new_tokens": 30, "num_beams": 1, "do_sample": False}
"""What :meth:`Blip2Captioner.caption` does without options: greedy, at most 30 new tokens."""


class Blip2Captioner:
    """The ``ImageCaptioner`` over ``transformers.Blip2ForConditionalGeneration`` (batched ``generate``).

    Decoding: greedy by default; ``num_beams`` for beam search; ``do_sample`` with ``temperature``,
    ``top_p``, ``top_k`` (and ``seed`` for repeatable samples); ``max_new_tokens``,
    ``min_new_tokens``, ``repetition_penalty``, ``length_penalty``; ``prompt`` to continue (the
    caption is the continuation, without the prompt). ``decoding`` given here are the defaults of
    every :meth:`caption` call.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        name: str,
        fingerprint: str,
        device: torch.device | None = None,
        batch_size: int = 16,
        decoding: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.fingerprint = fingerprint
        if model.config.image_token_index is None:
            raise ModelLoadError(
                f"model {name!r}: config.image_token_index is not set (a BLIP-2 checkpoint in the format before "
                "transformers placed image tokens in the prompt): use a current hub revision of the model"
            )
        self.device = device or torch.device("cpu")
        self.batch_size = batch_size
        self.model = model.eval().to(self.device)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.decoding = check_decoding(decoding or {}, DECODING_DEFAULTS)
        self._transform = Blip2ImageTransform.from_image_processor(processor.image_processor)

    @property
    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return self._transform

    def _prompt_ids(self, prompt: str | None) -> list[int]:
        """Image tokens (one per query) + the prompt's tokens, as the processor lays them out; without a
        prompt, image tokens + BOS, as ``generate`` does."""
        config = self.model.config
        image_tokens = [int(config.image_token_index)] * int(config.num_query_tokens)
        if prompt is None:
            bos = config.text_config.bos_token_id
            return image_tokens + ([int(bos)] if bos is not None else [])
        return image_tokens + list(self.tokenizer(prompt, return_token_type_ids=False)["input_ids"])

    @torch.inference_mode()
    def caption(self, pixels: torch.Tensor, **decoding: object) -> list[str]:
        opts = check_decoding({**self.decoding, **decoding}, DECODING_DEFAULTS)
        prompt = opts.pop("prompt", None)
        seed = opts.pop("seed", None)
        if len(pixels) == 0:
            return []
        prefix = self._prompt_ids(prompt)
        dtype = next(self.model.vision_model.parameters()).dtype
        generation = dict(opts)
        pad = self.model.generation_config.pad_token_id
        if pad is None:
            pad = (
                self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
            )
        if pad is not None:
            generation["pad_token_id"] = pad
        decoder_only = not self.model.language_model.config.is_encoder_decoder
        captions: list[str] = []
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            for lo in range(0, len(pixels), self.batch_size):
                batch = pixels[lo : lo + self.batch_size].to(self.device, dtype)
                ids = torch.tensor([prefix] * len(batch), dtype=torch.long, device=self.device)
                out = self.model.generate(
                    pixel_values=batch, input_ids=ids, attention_mask=torch.ones_like(ids), **generation
                )
                if decoder_only and out.shape[1] >= ids.shape[1] and torch.equal(out[:, : ids.shape[1]], ids):
                    out = out[:, ids.shape[1] :]  # generate returns the prompt, then the continuation
                texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
                captions.extend(text.strip() for text in texts)
        return captions

    def caption_images(self, images: Sequence[Image.Image], **decoding: object) -> list[str]:
        """PIL images -> captions."""
        if not images:
            return []
        return self.caption(torch.stack([self._transform(im) for im in images]), **decoding)


def load_blip2_captioner(entry: ModelEntry) -> Blip2Captioner:
    """Load a ``blip2_captioner`` entry: a ``Blip2ForConditionalGeneration`` checkpoint and its processor."""
    loaded = load_checkpoint(entry, CAPTIONER_CLASS)
    return Blip2Captioner(
        loaded.model,
        loaded.processor,
        name=entry.name,
        fingerprint=loaded.fingerprint,
        device=loaded.device,
        batch_size=entry.batch_size,
    )


__all__ = ["DECODING_DEFAULTS", "Blip2Captioner", "load_blip2_captioner"]
