"""Stock BLIP-2 from transformers: the ``blip2`` matcher and the ``blip2_captioner`` captioner.

What users with a model hub run: ``Salesforce/blip2-itm-vit-g`` (``Blip2ForImageTextRetrieval``) to
rerank, ``Salesforce/blip2-opt-2.7b`` (or any ``Blip2ForConditionalGeneration`` checkpoint) to
caption. Both load through transformers' own ``from_pretrained`` by hub id (``weights: hf-hub``)
or from a folder written with ``save_pretrained`` (``weights: local-dir``), each with the processor
saved beside it, so the offline tests exercise the same code on tiny checkpoints they write.

Hub loads look in the local cache first and only then ask the hub, never when ``HF_HUB_OFFLINE``
(or ``TRANSFORMERS_OFFLINE``) is set: a model that is not there is one :class:`ModelLoadError`
that says how to get it, not a hang.

Fingerprints (what feature and caption caches are keyed by) digest the model class, the folder's
``config.json`` (minus ``transformers_version`` / ``_name_or_path``), the image preprocessing and a
*sampled* digest of the weights files: each file's name and size, its first and last MiB (a
safetensors header lists every tensor's name, shape and offsets) and 16 evenly spaced 64 KiB
blocks. That is cheap for multi-GB checkpoints and tells one checkpoint from another, but not two
files that differ in a few weights only; pin ``sha256`` in the entry for a full check (it is then
part of the fingerprint too).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .base import MatchScores
from .entries import ModelEntry, config_root
from .open_clip_encoder import ModelLoadError, pick_device, sha256_file

logger = logging.getLogger(__name__)

MATCHER_CLASS = "Blip2ForImageTextRetrieval"
CAPTIONER_CLASS = "Blip2ForConditionalGeneration"
_EXAMPLE_HUB_ID = {MATCHER_CLASS: "Salesforce/blip2-itm-vit-g", CAPTIONER_CLASS: "Salesforce/blip2-opt-2.7b"}

# Weights file names in the order transformers prefers them (safetensors first).
_WEIGHTS_SINGLE = ("model.safetensors", "pytorch_model.bin")
_WEIGHTS_INDEX = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


# ------------------------------------------------------------------------------ preprocessing
_TV_MODES = {0: "NEAREST_EXACT", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}
"""PIL resample codes -> torchvision InterpolationMode names (as transformers maps them)."""


@dataclass(frozen=True)
class Blip2ImageTransform:
    """PIL image -> (3, H, W) float32 tensor, as the checkpoint's BLIP image processor computes it.

    A plain frozen dataclass (picklable: safe in worker processes). ``backend`` follows the image
    processor: ``torchvision`` (transformers 5's default: uint8 tensor, antialiased resize, fused
    rescale + normalise) or ``pil`` (PIL resize, then numpy rescale and normalise).
    """

    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resample: int = 3
    """PIL resample code (3: bicubic, BLIP's)."""
    rescale_factor: float = 1 / 255
    do_resize: bool = True
    do_rescale: bool = True
    do_normalize: bool = True
    backend: str = "torchvision"

    @classmethod
    def from_image_processor(cls, processor: Any) -> Blip2ImageTransform:
        """Read size, mean, std, resample... off a transformers (BLIP) image processor."""
        size = processor.size
        height, width = _get(size, "height"), _get(size, "width")
        if not height or not width:
            raise ModelLoadError(f"BLIP-2 image processor: expected a fixed size {{height, width}}, got {size!r}")
        if getattr(processor, "do_center_crop", False) or getattr(processor, "do_pad", False):
            raise ModelLoadError("BLIP-2 image processor: center crop / padding are not supported (BLIP uses neither)")
        resample = getattr(processor, "resample", None)
        return cls(
            height=int(height),
            width=int(width),
            mean=tuple(float(v) for v in np.atleast_1d(processor.image_mean)),
            std=tuple(float(v) for v in np.atleast_1d(processor.image_std)),
            resample=2 if resample is None else int(resample),
            rescale_factor=float(processor.rescale_factor),
            do_resize=bool(processor.do_resize),
            do_rescale=bool(processor.do_rescale),
            do_normalize=bool(processor.do_normalize),
            backend=_backend_of(processor),
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (part of the fingerprint)."""
        return asdict(self)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        rgb = _to_rgb(image)
        if self.backend == "torchvision":
            return self._torchvision(rgb)
        return self._pil(rgb)

    def _torchvision(self, rgb: Image.Image) -> torch.Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as tvF

        x = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()  # (3, h, w) uint8
        if self.do_resize:
            mode = getattr(InterpolationMode, _TV_MODES.get(self.resample, "BILINEAR"))
            x = tvF.resize(x, [self.height, self.width], interpolation=mode, antialias=True)
        if self.do_normalize:
            mean, std = torch.tensor(self.mean), torch.tensor(self.std)
            if self.do_rescale:  # fused, as transformers does it
                mean, std = mean * (1.0 / self.rescale_factor), std * (1.0 / self.rescale_factor)
            return tvF.normalize(x.to(torch.float32), mean.tolist(), std.tolist())
        return x.to(torch.float32) * self.rescale_factor if self.do_rescale else x.to(torch.float32)

    def _pil(self, rgb: Image.Image) -> torch.Tensor:
        if self.do_resize:
            rgb = rgb.resize((self.width, self.height), resample=Image.Resampling(self.resample))
        x = np.asarray(rgb).astype(np.float32 if not self.do_rescale else np.float64)
        if self.do_rescale:
            x = (x * self.rescale_factor).astype(np.float32)
        if self.do_normalize:
            x = ((x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)).astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def _backend_of(processor: Any) -> str:
    """``torchvision`` or ``pil``: transformers >= 5.2x names it (``backend``); before, fast processors
    (torchvision) were ``...Fast`` classes and the others worked with PIL / numpy."""
    backend = getattr(processor, "backend", None)
    if isinstance(backend, str):
        return "pil" if backend == "pil" else "torchvision"
    return "torchvision" if type(processor).__name__.endswith("Fast") else "pil"


def _get(mapping: Any, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, Mapping) else getattr(mapping, key, None)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, transparency composited onto white (as transformers' ``convert_to_rgb``)."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


# ------------------------------------------------------------------------------------ matcher
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


# ---------------------------------------------------------------------------------- captioner
DECODING_DEFAULTS: dict[str, Any] = {"max_new_tokens": 30, "num_beams": 1, "do_sample": False}
DECODING_OPTIONS = (
    "max_new_tokens",
    "min_new_tokens",
    "num_beams",
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "length_penalty",
    "prompt",
    "seed",
)
"""Options :meth:`Blip2Captioner.caption` accepts; anything else is an error."""
_SAMPLING_ONLY = ("temperature", "top_p", "top_k")


def check_decoding(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate decoding options (merged over :data:`DECODING_DEFAULTS`); a ValueError says what is wrong."""
    unknown = sorted(set(options) - set(DECODING_OPTIONS))
    if unknown:
        raise ValueError(f"unknown decoding option(s) {unknown}; known: {list(DECODING_OPTIONS)}")
    opts = {**DECODING_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    for key in ("max_new_tokens", "num_beams"):
        if not isinstance(opts[key], int) or isinstance(opts[key], bool) or opts[key] < 1:
            raise ValueError(f"decoding option {key!r} must be an integer >= 1, got {opts[key]!r}")
    for key in ("min_new_tokens", "top_k", "seed"):
        if key in opts and (not isinstance(opts[key], int) or isinstance(opts[key], bool) or opts[key] < 0):
            raise ValueError(f"decoding option {key!r} must be an integer >= 0, got {opts[key]!r}")
    if not isinstance(opts["do_sample"], bool):
        raise ValueError(f"decoding option 'do_sample' must be true or false, got {opts['do_sample']!r}")
    if "temperature" in opts and not (_is_number(opts["temperature"]) and opts["temperature"] > 0):
        raise ValueError(f"decoding option 'temperature' must be > 0, got {opts['temperature']!r}")
    if "top_p" in opts and not (_is_number(opts["top_p"]) and 0 < opts["top_p"] <= 1):
        raise ValueError(f"decoding option 'top_p' must be in (0, 1], got {opts['top_p']!r}")
    for key in ("repetition_penalty", "length_penalty"):
        if key in opts and not _is_number(opts[key]):
            raise ValueError(f"decoding option {key!r} must be a number, got {opts[key]!r}")
    if not opts["do_sample"]:
        given = [k for k in _SAMPLING_ONLY if k in opts]
        if given:
            raise ValueError(f"decoding option(s) {given} apply only when sampling: add do_sample=True")
    if "prompt" in opts and not isinstance(opts["prompt"], str):
        raise ValueError(f"decoding option 'prompt' must be a string, got {opts['prompt']!r}")
    return opts


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
        self.decoding = check_decoding(decoding or {})
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
        opts = check_decoding({**self.decoding, **decoding})
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


# ------------------------------------------------------------------------------------ loading
def hub_offline() -> bool:
    """Whether the model hub must not be asked (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _how_to_get(entry: ModelEntry, model_class: str) -> str:
    repo = entry.path if entry.weights == "hf-hub" else _EXAMPLE_HUB_ID[model_class]
    captioner = ", captioner=True" if model_class == CAPTIONER_CLASS else ""
    return (
        "download it once where a model hub is reachable and save it to a folder with save_pretrained (model and "
        f"processor: viewfinder.adapters.blip2.download_blip2({repo!r}, FOLDER{captioner}) does both), then use "
        "'weights: local-dir' and 'path: FOLDER' in the model entry"
    )


def _local_folder(entry: ModelEntry, model_class: str) -> Path:
    if entry.weights == "zoo":
        folder = config_root() / "zoo" / (entry.path or "")
        fix = "reinstall viewfinder"
    else:
        folder = Path(entry.path or "").expanduser()
        fix = _how_to_get(entry, model_class)
    if not folder.is_dir():
        raise ModelLoadError(f"model {entry.name!r}: folder {folder} does not exist: {fix}")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"model {entry.name!r}: {folder} has no config.json (not a save_pretrained folder): {fix}")
    return folder


def weights_files(folder: Path) -> list[Path]:
    """The weights files transformers loads from ``folder``: a single file, or the shards an index names."""
    for single, index in zip(_WEIGHTS_SINGLE, _WEIGHTS_INDEX, strict=True):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            shards = json.loads((folder / index).read_text())["weight_map"].values()
            return [folder / name for name in sorted(set(shards))]
    return []


def weights_sha256(files: Sequence[Path]) -> str:
    """SHA-256 that an entry's ``sha256`` pins: the file's own (``sha256sum model.safetensors``), or for
    shards, that of ``sha256sum``'s output over them in name order (``sha256sum model-*.safetensors | sha256sum``)."""
    if len(files) == 1:
        return sha256_file(files[0])
    listing = "".join(f"{sha256_file(f)}  {f.name}\n" for f in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def _check_sha256(entry: ModelEntry, files: Sequence[Path], folder: Path) -> None:
    if not entry.sha256:
        return
    if not files:
        raise ModelLoadError(f"model {entry.name!r}: {folder} has no weights file to check against 'sha256'")
    actual = weights_sha256(files)
    if actual != entry.sha256.lower():
        raise ModelLoadError(
            f"model {entry.name!r}: checksum mismatch for {', '.join(f.name for f in files)} in {folder}: "
            f"expected {entry.sha256}, got {actual}: replace the weights or fix 'sha256' in the model entry"
        )


def sampled_digest(path: Path, *, edge: int = 1 << 20, blocks: int = 16, block: int = 1 << 16) -> str:
    """Cheap digest of a (possibly multi-GB) file: size, first and last ``edge`` bytes, and ``blocks``
    evenly spaced blocks of ``block`` bytes (the whole file when it is small)."""
    size = path.stat().st_size
    digest = hashlib.sha256(f"{size}:".encode())
    with path.open("rb") as fh:
        if size <= 2 * edge + blocks * block:
            digest.update(fh.read())
            return digest.hexdigest()
        digest.update(fh.read(edge))
        for i in range(blocks):
            fh.seek(edge + (size - 2 * edge - block) * i // max(blocks - 1, 1))
            digest.update(fh.read(block))
        fh.seek(size - edge)
        digest.update(fh.read(edge))
    return digest.hexdigest()


def blip2_fingerprint(
    model_class: str, folder: Path, files: Sequence[Path], transform: Blip2ImageTransform, sha256: str | None
) -> str:
    """Digest of the model class, config, preprocessing and weights (see the module docstring)."""
    config = json.loads((folder / "config.json").read_text())
    for key in ("transformers_version", "_name_or_path"):
        config.pop(key, None)
    digest = hashlib.sha256(model_class.encode())
    digest.update(json.dumps(config, sort_keys=True).encode())
    digest.update(json.dumps(transform.describe(), sort_keys=True).encode())
    for f in files:
        digest.update(f"{f.name}:{sampled_digest(f)}".encode())
    digest.update((sha256 or "").lower().encode())
    return digest.hexdigest()[:32]


def _hub_folder(repo_id: str) -> Path | None:
    """The local snapshot folder of a hub repo already in the cache (None if not cached)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def _load_pretrained(entry: ModelEntry, model_class: str, dtype: torch.dtype) -> tuple[Any, Any, Path]:
    """(model, processor, local folder) through transformers' own loaders; every failure is one
    :class:`ModelLoadError` that says how to get the weights."""
    import transformers

    cls = getattr(transformers, model_class)
    if entry.weights == "hf-hub":
        source, cache_only = str(entry.path), hub_offline()
    else:
        folder = _local_folder(entry, model_class)
        source, cache_only = str(folder), True
        _check_architecture(entry, folder, model_class)
        _check_sha256(entry, weights_files(folder), folder)

    def load(local_files_only: bool) -> tuple[Any, Any, dict[str, Any]]:
        model, info = cls.from_pretrained(
            source, dtype=dtype, local_files_only=local_files_only, output_loading_info=True
        )
        processor = transformers.AutoProcessor.from_pretrained(source, local_files_only=local_files_only)
        return model, processor, info

    try:
        try:  # the cache first: a cached hub model loads without touching the network
            model, processor, info = load(True)
        except OSError:
            if cache_only:
                raise
            model, processor, info = load(False)
    except Exception as exc:  # noqa: BLE001 - one clean error, the cause chained
        if entry.weights == "hf-hub":
            why = "offline (HF_HUB_OFFLINE is set) and not in the local cache" if cache_only else f"{exc}"
            raise ModelLoadError(
                f"model {entry.name!r}: could not load {entry.path!r} from the model hub: {why}; "
                f"{_how_to_get(entry, model_class)}"
            ) from exc
        raise ModelLoadError(f"model {entry.name!r}: could not load {source}: {exc}") from exc
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise ModelLoadError(
            f"model {entry.name!r}: {source} lacks {len(missing)} weights a {model_class} needs "
            f"(e.g. {missing[:3]}): is it a {_EXAMPLE_HUB_ID[model_class]}-style checkpoint?"
        )
    if not hasattr(processor, "image_processor") or not hasattr(processor, "tokenizer"):
        raise ModelLoadError(f"model {entry.name!r}: {source} has no BLIP-2 processor (image processor + tokenizer)")
    if entry.weights == "hf-hub":
        folder = _hub_folder(source)
        if folder is None:
            raise ModelLoadError(f"model {entry.name!r}: loaded {source!r} but cannot find it in the hub cache")
        _check_architecture(entry, folder, model_class)
        _check_sha256(entry, weights_files(folder), folder)
    return model, processor, folder


def _check_architecture(entry: ModelEntry, folder: Path, model_class: str) -> None:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model {entry.name!r}: cannot read {folder / 'config.json'}: {exc}") from exc
    if config.get("model_type") != "blip-2":
        raise ModelLoadError(
            f"model {entry.name!r}: {folder} holds a {config.get('model_type')!r} model, not BLIP-2 (model_type blip-2)"
        )
    architectures = config.get("architectures") or []
    if architectures and model_class not in architectures:
        raise ModelLoadError(
            f"model {entry.name!r}: {folder} holds a {architectures[0]}, but family "
            f"{'blip2' if model_class == MATCHER_CLASS else 'blip2_captioner'} needs a {model_class} "
            f"(e.g. {_EXAMPLE_HUB_ID[model_class]})"
        )
    if model_class == MATCHER_CLASS and not (config.get("qformer_config") or {}).get("use_qformer_text_input"):
        raise ModelLoadError(
            f"model {entry.name!r}: {folder}: a {MATCHER_CLASS} needs qformer_config.use_qformer_text_input=true"
        )


def _setup(entry: ModelEntry) -> tuple[torch.device, torch.dtype]:
    device = pick_device(entry.device)
    return device, (_DTYPES[entry.precision] if device.type == "cuda" else torch.float32)


def load_blip2_matcher(entry: ModelEntry) -> Blip2Matcher:
    """Load a ``blip2`` entry: a ``Blip2ForImageTextRetrieval`` checkpoint and its processor."""
    device, dtype = _setup(entry)
    model, processor, folder = _load_pretrained(entry, MATCHER_CLASS, dtype)
    transform = Blip2ImageTransform.from_image_processor(processor.image_processor)
    fingerprint = blip2_fingerprint(MATCHER_CLASS, folder, weights_files(folder), transform, entry.sha256)
    return Blip2Matcher(
        model, processor, name=entry.name, fingerprint=fingerprint, device=device, batch_size=entry.batch_size
    )


def load_blip2_captioner(entry: ModelEntry) -> Blip2Captioner:
    """Load a ``blip2_captioner`` entry: a ``Blip2ForConditionalGeneration`` checkpoint and its processor."""
    device, dtype = _setup(entry)
    model, processor, folder = _load_pretrained(entry, CAPTIONER_CLASS, dtype)
    transform = Blip2ImageTransform.from_image_processor(processor.image_processor)
    fingerprint = blip2_fingerprint(CAPTIONER_CLASS, folder, weights_files(folder), transform, entry.sha256)
    return Blip2Captioner(
        model, processor, name=entry.name, fingerprint=fingerprint, device=device, batch_size=entry.batch_size
    )


def download_blip2(repo_id: str, folder: str | Path, *, captioner: bool = False) -> Path:
    """Where a model hub is reachable: fetch a BLIP-2 checkpoint + processor and save them to ``folder``
    (then use ``weights: local-dir``, ``path: folder`` offline)."""
    import transformers

    if hub_offline():
        raise ModelLoadError("download_blip2 needs a reachable model hub: unset HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE")
    folder = Path(folder).expanduser()
    cls = getattr(transformers, CAPTIONER_CLASS if captioner else MATCHER_CLASS)
    cls.from_pretrained(repo_id).save_pretrained(folder)
    transformers.AutoProcessor.from_pretrained(repo_id).save_pretrained(folder)
    return folder


__all__ = [
    "DECODING_DEFAULTS",
    "DECODING_OPTIONS",
    "Blip2Captioner",
    "Blip2ImageTransform",
    "Blip2Matcher",
    "blip2_fingerprint",
    "check_decoding",
    "download_blip2",
    "hub_offline",
    "load_blip2_captioner",
    "load_blip2_matcher",
    "sampled_digest",
    "weights_files",
    "weights_sha256",
]
