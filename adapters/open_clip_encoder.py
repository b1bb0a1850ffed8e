"""open_clip dual encoder behind the :class:`~viewfinder.adapters.base.ImageTextEncoder` protocol.

Weights are loaded only through open_clip's own loaders (``create_model_and_transforms`` with a
pretrained tag, a checkpoint file, or a ``local-dir:``/``hf-hub:`` schema), so the path a user
with a model hub takes is the same code that the offline tests exercise.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from PIL import Image

from .entries import EncoderEntry, config_root

logger = logging.getLogger(__name__)

_ARCH_DIR_REGISTERED = False


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what is missing and how to fix it."""


def _register_packaged_archs() -> None:
    global _ARCH_DIR_REGISTERED
    if not _ARCH_DIR_REGISTERED:
        open_clip.add_model_config(config_root() / "arch")
        _ARCH_DIR_REGISTERED = True


def pick_device(requested: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' requested but CUDA is not available; use device: auto or cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, shape, dtype, bytes), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class OpenClipEncoder:
    """An open_clip CLIP model with its preprocessing and tokenizer.

    Build it with :func:`load_open_clip_encoder` (from a config entry) or directly from a model
    and its transform (tests).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Any,
        *,
        name: str,
        arch_cfg: dict[str, Any],
        device: torch.device | None = None,
        precision: str = "fp32",
        batch_size: int = 64,
    ) -> None:
        self.name = name
        self.device = device or torch.device("cpu")
        self.batch_size = batch_size
        self._transform = transform
        self.tokenizer = tokenizer
        model.eval()
        # Fingerprint before any cast: the same weights give the same fingerprint on CPU and GPU.
        self.fingerprint = hashlib.sha256(
            json.dumps(arch_cfg, sort_keys=True).encode()
            + repr(transform).encode()  # image size, resize mode, mean/std
            + weights_digest(model).encode()
        ).hexdigest()[:32]
        self.dtype = torch.float32
        if self.device.type == "cuda" and precision in ("fp16", "bf16"):
            self.dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        elif precision != "fp32":
            logger.warning("precision %s requested on %s: running fp32", precision, self.device)
        self.model = model.to(self.device, dtype=self.dtype)
        self.embed_dim = int(arch_cfg.get("embed_dim") or self._probe_dim())
        self.context_length = int(getattr(tokenizer, "context_length", 77))

    def _probe_dim(self) -> int:
        return int(self.encode_texts(["probe"]).shape[1])

    @property
    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return self._transform

    @torch.inference_mode()
    def encode_image_tensors(self, pixels: torch.Tensor) -> np.ndarray:
        out = []
        for start in range(0, len(pixels), self.batch_size):
            chunk = pixels[start : start + self.batch_size].to(self.device, dtype=self.dtype)  # (B, 3, H, W)
            feats = self.model.encode_image(chunk, normalize=True)  # (B, D)
            out.append(feats.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.embed_dim), np.float32)
        return self.encode_image_tensors(torch.stack([self._transform(im.convert("RGB")) for im in images]))

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[start : start + self.batch_size])).to(self.device)  # (B, T)
            feats = self.model.encode_text(tokens, normalize=True)  # (B, D)
            out.append(feats.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    def count_tokens(self, text: str) -> int:
        encode = getattr(self.tokenizer, "encode", None)
        if encode is None:  # HF tokenizer wrappers: ask the underlying tokenizer
            inner = getattr(self.tokenizer, "tokenizer", None)
            return len(inner(text)["input_ids"]) if inner is not None else 0
        return len(encode(text)) + 2  # start and end tokens


def _check_sha256(path: Path, expected: str | None) -> None:
    if expected and not path.is_dir():
        actual = sha256_file(path)
        if actual != expected:
            raise ModelLoadError(f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}")


def zoo_dir(name: str) -> Path:
    """Folder of a model shipped inside the package (``configs/zoo/NAME``)."""
    return config_root() / "zoo" / name


def _arch_name(arch: str) -> str:
    """Register an architecture given as a JSON path and return its open_clip name."""
    path = Path(arch).expanduser()
    if path.suffix == ".json":
        if not path.is_file():
            raise ModelLoadError(f"architecture config not found: {path}")
        open_clip.add_model_config(path)
        return path.stem
    return arch


def load_open_clip_encoder(entry: EncoderEntry) -> OpenClipEncoder:
    """Load an encoder entry through open_clip's loaders. Never reaches the network unless the
    entry names hub weights (``pretrained`` tag or ``hf-hub``)."""
    _register_packaged_archs()
    if entry.threads:
        torch.set_num_threads(entry.threads)
    device = pick_device(entry.device)
    model_name: str
    pretrained: str | None = None
    if entry.weights in ("local-dir", "zoo"):
        folder = zoo_dir(entry.path or "") if entry.weights == "zoo" else Path(entry.path or "").expanduser()
        if not (folder / "open_clip_config.json").is_file():
            hint = (
                "reinstall viewfinder"
                if entry.weights == "zoo"
                else "point 'path' at a folder with open_clip_config.json and weights"
            )
            raise ModelLoadError(f"model folder {folder} has no open_clip_config.json: {hint}")
        if entry.sha256 and entry.weights == "local-dir":
            weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
            if weights:
                _check_sha256(weights[0], entry.sha256)
        model_name = f"local-dir:{folder}"
        arch_cfg = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
    elif entry.weights == "hf-hub":
        model_name = f"hf-hub:{entry.path}"
        arch_cfg = {"hf_hub": entry.path}
    else:
        model_name = _arch_name(entry.arch or "")
        cfg = open_clip.get_model_config(model_name)
        if cfg is None:
            raise ModelLoadError(
                f"unknown architecture {entry.arch!r}: not an open_clip built-in, not in "
                f"{config_root() / 'arch'}, and not a .json file"
            )
        arch_cfg = cfg
        if entry.weights == "pretrained":
            pretrained = entry.pretrained
        elif entry.weights == "file":
            ckpt = Path(entry.path or "").expanduser()
            if not ckpt.is_file():
                raise ModelLoadError(f"checkpoint file not found: {ckpt}")
            _check_sha256(ckpt, entry.sha256)
            pretrained = str(ckpt)
    if entry.weights == "random":
        torch.manual_seed(entry.seed)
    try:
        model, _, transform = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
    except (RuntimeError, OSError, ValueError) as exc:
        hint = ""
        if entry.weights in ("pretrained", "hf-hub"):
            hint = (
                " (these weights come from a model hub: check the network, or download them once and"
                " use weights: file / local-dir)"
            )
        raise ModelLoadError(f"could not load encoder {entry.name!r} ({model_name}): {exc}{hint}") from exc
    tokenizer = open_clip.get_tokenizer(model_name)
    return OpenClipEncoder(
        model,
        transform,
        tokenizer,
        name=entry.name,
        arch_cfg=arch_cfg,
        device=device,
        precision=entry.precision,
        batch_size=entry.batch_size,
    )


def save_local_dir(
    model: torch.nn.Module,
    model_cfg: dict[str, Any],
    folder: Path,
    *,
    fp16: bool = False,
    preprocess_cfg: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as an open_clip ``local-dir`` folder (config + safetensors weights)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if fp16 and v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg or {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    return folder


__all__ = [
    "OpenClipEncoder",
    "ModelLoadError",
    "load_open_clip_encoder",
    "save_local_dir",
    "pick_device",
    "zoo_dir",
]
