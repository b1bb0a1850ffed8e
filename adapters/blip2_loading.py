"""Stock BLIP-2 checkpoints from transformers: loading, preprocessing and fingerprints.

What users with a model hub run: ``Salesforce/blip2-itm-vit-g`` (``Blip2ForImageTextRetrieval``,
:mod:`.blip2_matcher`) to rerank, ``Salesforce/blip2-opt-2.7b`` (or any
``Blip2ForConditionalGeneration`` checkpoint, :mod:`.blip2_captioner`) to caption. Both load
through transformers' own ``from_pretrained`` by hub id (``weights: hf-hub``) or from a folder
written with ``save_pretrained`` (``weights: local-dir``), each with the processor saved beside
it, so the offline tests exercise the same code on tiny checkpoints they write.

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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

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
        f"processor: viewfinder.adapters.blip2_loading.download_blip2({repo!r}, FOLDER{captioner}) does both), "
        "then use 'weights: local-dir' and 'path: FOLDER' in the model entry"
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


@dataclass
class Blip2Checkpoint:
    """A loaded BLIP-2 checkpoint: the model (on CPU), its processor, where it runs and its fingerprint."""

    model: Any
    processor: Any
    device: torch.device
    fingerprint: str


def load_checkpoint(entry: ModelEntry, model_class: str) -> Blip2Checkpoint:
    """Load an entry's ``model_class`` checkpoint and processor (fp16 / bf16 on CUDA as the entry asks)."""
    device = pick_device(entry.device)
    dtype = _DTYPES[entry.precision] if device.type == "cuda" else torch.float32
    model, processor, folder = _load_pretrained(entry, model_class, dtype)
    transform = Blip2ImageTransform.from_image_processor(processor.image_processor)
    fingerprint = blip2_fingerprint(model_class, folder, weights_files(folder), transform, entry.sha256)
    return Blip2Checkpoint(model, processor, device, fingerprint)


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
    "CAPTIONER_CLASS",
    "MATCHER_CLASS",
    "Blip2Checkpoint",
    "Blip2ImageTransform",
    "blip2_fingerprint",
    "download_blip2",
    "hub_offline",
    "load_checkpoint",
    "sampled_digest",
    "weights_files",
    "weights_sha256",
]
