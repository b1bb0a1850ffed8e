"""open_clip dual encoder behind the :class:`~viewfinder.adapters.base.ImageTextEncoder` protocol.

Weights are loaded only through open_clip's own loaders (``create_model_and_transforms`` with a
pretrained tag, a checkpoint file, or a ``local-dir:``/``hf-hub:`` schema), so the path a user
with a model hub takes is the same code that the offline tests exercise.
"""

from __future__ import annotations

import copy
import enum
import functools
import hashlib
import importlib
import json
import logging
import threading
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
from PIL import Image

from ..errors import Error
from .entries import EncoderEntry, config_root
from .package_file import sha256_of as sha256_file

logger = logging.getLogger(__name__)

_REGISTRY_LOCK = threading.RLock()


class ModelLoadError(Error, RuntimeError):
    """A model could not be loaded; the message says what is missing and how to fix it."""


@dataclass(frozen=True)
class ArchConfig:
    """An architecture resolved to its open_clip model config and the name open_clip creates it under."""

    name: str
    """An open_clip built-in name, or for a JSON file ``STEM.vf-HASH``: unique to the file's content, so
    two files with the same stem (``my/tiny-test.json``, two ``model.json``) never stand for each other."""
    config: dict[str, Any]
    """The model config (``embed_dim``, ``vision_cfg``, ``text_cfg``...)."""
    builtin: bool
    """True for an open_clip built-in architecture (known to open_clip without registering anything)."""


def resolve_arch(arch: str) -> ArchConfig:
    """Resolve an entry's ``arch``: a path to an open_clip JSON config, a file in the packaged
    ``configs/arch`` (name without ``.json``; it wins over a built-in of the same name), or an
    open_clip built-in name. Reads JSON files itself: nothing is added to open_clip's registry."""
    path = Path(arch).expanduser()
    if path.suffix == ".json":
        if not path.is_file():
            raise ModelLoadError(
                f"architecture config not found: {path}: check the path (relative paths in a YAML "
                "file are relative to its folder)"
            )
        return _arch_from_file(path)
    packaged = config_root() / "arch" / f"{arch}.json"
    if packaged.is_file():
        return _arch_from_file(packaged)
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ModelLoadError(
            f"unknown architecture {arch!r}: not an open_clip built-in, not in {config_root() / 'arch'}, "
            "and not a .json file: fix 'arch' (open_clip.list_models() lists the built-ins)"
        )
    return ArchConfig(arch, cfg, builtin=True)


def _arch_from_file(path: Path) -> ArchConfig:
    raw = path.read_bytes()
    try:
        cfg = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"architecture config {path} is not valid JSON ({exc}): fix or replace the file") from exc
    if isinstance(cfg, dict) and isinstance(cfg.get("model_cfg"), dict):  # an open_clip_config.json
        cfg = cfg["model_cfg"]
    if not isinstance(cfg, dict) or not {"vision_cfg", "text_cfg"} <= set(cfg):
        raise ModelLoadError(
            f"architecture config {path} is not an open_clip model config: it needs 'vision_cfg' and 'text_cfg'"
        )
    return ArchConfig(f"{path.stem}.vf-{hashlib.sha256(raw).hexdigest()[:16]}", cfg, builtin=False)


@contextmanager
def registered_arch(arch: ArchConfig) -> Iterator[str]:
    """Make ``arch`` known to open_clip's loaders (``create_model*``, ``get_tokenizer``) for the block.

    Built-ins need nothing. A JSON architecture is added to open_clip's model table under its
    unique name and taken out again afterwards, so loading leaves open_clip's registry as it was.
    """
    if arch.builtin:
        yield arch.name
        return
    with _REGISTRY_LOCK:
        table = open_clip.factory._MODEL_CONFIGS
        present = arch.name in table
        table[arch.name] = copy.deepcopy(arch.config)
        try:
            yield arch.name
        finally:
            if not present:
                open_clip.factory._MODEL_CONFIGS.pop(arch.name, None)


@dataclass
class OpenClipModel:
    """What :func:`create_open_clip` makes: an open_clip model, its (evaluation) image transform, its
    tokenizer and the architecture it was created from."""

    model: torch.nn.Module
    transform: Callable[[Image.Image], torch.Tensor]
    tokenizer: Any
    arch: ArchConfig


def create_open_clip(arch: str | ArchConfig, *, pretrained: str | None = None, **kwargs: Any) -> OpenClipModel:
    """Create an open_clip model (and its transform and tokenizer) from an architecture: an open_clip
    built-in name, a packaged ``configs/arch`` name or a JSON file (:func:`resolve_arch`), or one
    already resolved. ``kwargs`` go to ``open_clip.create_model_and_transforms`` (e.g.
    ``output_dict=True``). A JSON architecture is known to open_clip only while the model is created
    (:func:`registered_arch`): open_clip's model table is left as it was. Random initialisation draws
    from torch's global generator, as open_clip's own does (seed it first for a repeatable model).
    """
    resolved = arch if isinstance(arch, ArchConfig) else resolve_arch(arch)
    with registered_arch(resolved) as model_name:
        model, _, transform = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, **kwargs)
        tokenizer = open_clip.get_tokenizer(model_name)
    return OpenClipModel(model, transform, tokenizer, resolved)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads, then restore the caller's setting (None: no change)."""
    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pick_device(requested: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' requested but CUDA is not available; use device: auto or cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def describe_transform(transform: Any, depth: int = 0) -> Any:
    """A stable, JSON-ready description of an image transform: each step's class name and its
    parameters (size, interpolation, mean, std, resize mode...), never a ``repr`` (which may hold
    memory addresses that change from one process to the next)."""
    if transform is None or isinstance(transform, bool | int | float | str):
        return transform
    if isinstance(transform, enum.Enum):
        return f"{type(transform).__name__}.{transform.name}"
    if isinstance(transform, torch.Tensor | np.ndarray):
        return np.asarray(transform.tolist()).tolist()
    if isinstance(transform, list | tuple):
        return [describe_transform(item, depth + 1) for item in transform]
    if isinstance(transform, dict):
        return {
            str(k): describe_transform(v, depth + 1) for k, v in sorted(transform.items(), key=lambda kv: str(kv[0]))
        }
    if isinstance(transform, functools.partial):
        return {
            "partial": describe_transform(transform.func, depth + 1),
            "args": describe_transform(list(transform.args), depth + 1),
            "kwargs": describe_transform(dict(transform.keywords), depth + 1),
        }
    if isinstance(transform, type | types.FunctionType | types.BuiltinFunctionType | types.MethodType):
        return transform.__qualname__  # a plain function step, e.g. open_clip's _convert_to_rgb
    description: dict[str, Any] = {"type": type(transform).__qualname__}
    if depth <= 6 and hasattr(transform, "__dict__"):
        for key, value in sorted(vars(transform).items()):
            if not key.startswith("_") and key != "training":  # nn.Module bookkeeping
                description[key] = describe_transform(value, depth + 1)
    return description


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer (name, shape, dtype, bytes), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class ToUint8Tensor:
    """PIL image -> (3, H, W) uint8 tensor: the last step of a transform whose normalisation is
    left to the encoder (4x fewer bytes between decoding workers and the model)."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def split_normalization(transform: Any) -> tuple[Any, tuple[float, ...], tuple[float, ...]] | None:
    """For a torchvision ``Compose`` ending in to-tensor + ``Normalize``: the same steps ending in a
    uint8 tensor instead, and the normalisation's mean and std. None for any other transform."""
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", []))
    if len(steps) < 2 or not isinstance(steps[-1], T.Normalize):
        return None
    if type(steps[-2]).__name__ not in ("ToTensor", "MaybeToTensor"):
        return None
    mean, std = tuple(float(m) for m in steps[-1].mean), tuple(float(s) for s in steps[-1].std)
    return T.Compose([*steps[:-2], ToUint8Tensor()]), mean, std


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with its ``nn.Linear`` layers dynamically quantised to int8 (weights int8, activations
    quantised per batch; CPU only). Transformer towers are almost all linear layers; a convolutional
    tower keeps its convolutions in fp32. Linear layers whose weights their parent reads directly
    (open_clip's attention pooling passes ``q_proj.weight`` to ``multi_head_attention_forward``) stay fp32."""
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    reads_weights = tuple(
        cls for cls in (getattr(importlib.import_module("open_clip.modified_resnet"), "AttentionPool2d", None),) if cls
    )
    skip = {f"{name}." for name, module in model.named_modules() if reads_weights and isinstance(module, reads_weights)}
    linear = {
        name: default_dynamic_qconfig
        for name, module in model.named_modules()
        if type(module) is torch.nn.Linear and not any(name.startswith(prefix) for prefix in skip)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization points at torchao
        warnings.simplefilter("ignore", UserWarning)  # "quantized tensor creation functions ... are deprecated"
        quantized = quantize_dynamic(model.float().eval(), linear, dtype=torch.qint8)
    for name, module in quantized.named_modules():
        if name in linear:
            module.int8_original_dtype = torch.float32  # open_clip asks a block's c_fc for the dtype to cast to
    return quantized


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
        threads: int | None = None,
    ) -> None:
        self.name = name
        self.device = device or torch.device("cpu")
        self.batch_size = batch_size
        self.threads = threads
        """torch intra-op threads for this encoder's forward passes (None: the caller's setting)."""
        self._transform = transform
        split = split_normalization(transform)
        self.uint8_image_transform: Callable[[Image.Image], torch.Tensor] | None = split[0] if split else None
        """PIL -> uint8 (3, H, W) with normalisation left to :meth:`encode_image_tensors` (None when the
        transform cannot be split): decoding workers hand over 4x fewer bytes."""
        self._norm = (
            (torch.tensor(split[1]).view(1, 3, 1, 1), torch.tensor(split[2]).view(1, 3, 1, 1)) if split else None
        )
        self.tokenizer = tokenizer
        model.eval()
        # Fingerprint before any cast: the same weights give the same fingerprint on CPU and GPU.
        self.fingerprint = hashlib.sha256(
            json.dumps(arch_cfg, sort_keys=True).encode()
            + json.dumps(describe_transform(transform), sort_keys=True).encode()  # size, resize mode, mean/std
            + weights_digest(model).encode()
        ).hexdigest()[:32]
        self.precision = precision
        self.model = model
        self.quantized = False
        """The linear layers run in int8 (``precision: int8`` on the CPU)."""
        self.to_device(self.device)
        self.embed_dim = int(arch_cfg.get("embed_dim") or self._probe_dim())
        self.context_length = int(getattr(tokenizer, "context_length", 77))

    def to_device(self, device: torch.device) -> None:
        """Move the model (and its normalisation) to ``device``, in the precision asked for where the
        device has it: fp16/bf16 on CUDA, int8 on the CPU (:func:`quantize_int8`), fp32 otherwise.
        The fingerprint does not change: it names the weights, whatever precision runs them."""
        self.device = device
        self.dtype = torch.float32
        if device.type == "cuda" and self.precision in ("fp16", "bf16"):
            self.dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        elif self.precision == "int8" and device.type == "cpu":
            if not self.quantized:
                self.model = quantize_int8(self.model)
                self.quantized = True
        elif self.precision != "fp32":
            logger.warning("precision %s requested on %s: running fp32", self.precision, device)
        if self.quantized and device.type != "cpu":
            raise ValueError(f"encoder {self.name!r} is quantised to int8, which runs on the CPU only")
        self.model = self.model.to(device, dtype=self.dtype) if not self.quantized else self.model
        if self._norm is not None:
            self._norm = (self._norm[0].to(device), self._norm[1].to(device))

    def _probe_dim(self) -> int:
        return int(self.encode_texts(["probe"]).shape[1])

    @property
    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        return self._transform

    @torch.inference_mode()
    def encode_image_tensors(self, pixels: torch.Tensor) -> np.ndarray:
        """(B, 3, H, W) pixels from :attr:`image_transform` (float) or :attr:`uint8_image_transform`
        (uint8, normalised here) -> (B, D) float32, L2-normalised."""
        out = []
        with torch_threads(self.threads):
            for start in range(0, len(pixels), self.batch_size):
                chunk = pixels[start : start + self.batch_size].to(self.device, non_blocking=True)  # (B, 3, H, W)
                if chunk.dtype == torch.uint8:  # from uint8_image_transform: normalise here, on the device
                    if self._norm is None:
                        raise ValueError(f"encoder {self.name!r} has no normalisation to apply to uint8 pixels")
                    chunk = (chunk.float() / 255 - self._norm[0]) / self._norm[1]
                chunk = chunk.to(self.dtype)  # cast after the copy, on the device
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
        with torch_threads(self.threads):
            for start in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(list(texts[start : start + self.batch_size])).to(self.device)  # (B, T)
                feats = self.model.encode_text(tokens, normalize=True)  # (B, D)
                out.append(feats.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` needs, special tokens included, without the context's cap (so a caller can
        tell when encoding will truncate it)."""
        tokenizer = self.tokenizer
        encode = getattr(tokenizer, "encode", None)
        if callable(encode):  # open_clip's SimpleTokenizer: encode() gives the words' tokens
            return len(encode(text)) + 2  # start and end tokens
        inner = getattr(tokenizer, "tokenizer", None)
        if callable(inner):  # open_clip's HFTokenizer / SigLipTokenizer: ask the Hugging Face tokenizer
            clean = getattr(tokenizer, "clean_fn", None)
            cleaned = clean(text) if callable(clean) else text
            if getattr(tokenizer, "tokenizer_mode", "") == "clips":  # words, then bos, eos and the class token
                return len(inner(cleaned, add_special_tokens=False)["input_ids"]) + 3
            return len(inner(cleaned)["input_ids"])  # special tokens included
        return self._count_by_tokenizing(text)

    def _count_by_tokenizing(self, text: str) -> int:
        """Any other tokenizer: tokenize with room for every token and count the non-padding ones."""
        room = max(self.context_length, 4 * len(text.encode("utf-8")) + 8)
        try:
            tokens = self.tokenizer([text], context_length=room)[0]  # (room,), padded with zeros
        except TypeError as exc:
            raise TypeError(
                f"cannot count tokens with {type(self.tokenizer).__name__}: give it an encode(text) method, "
                "a Hugging Face .tokenizer, or a context_length keyword"
            ) from exc
        count = int((torch.as_tensor(tokens) != 0).sum())
        if count == 0 and text:
            raise TypeError(f"{type(self.tokenizer).__name__} gave no tokens for {text[:40]!r}: cannot count tokens")
        return count


def _check_sha256(path: Path, expected: str | None, fix: str) -> None:
    if expected and not path.is_dir():
        actual = sha256_file(path)
        if actual != expected.lower():
            raise ModelLoadError(f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}: {fix}")


def zoo_dir(name: str) -> Path:
    """Folder of a model shipped inside the package (``configs/zoo/NAME``)."""
    return config_root() / "zoo" / name


def _folder_weights(folder: Path) -> Path | None:
    """The weights file open_clip's ``local-dir:`` loader picks in ``folder`` (None: none there)."""
    find = getattr(open_clip.factory, "_find_checkpoint_in_dir", None)
    if callable(find):
        found = find(folder)
        return Path(found) if found else None
    candidates = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) + sorted(folder.glob("*.pth"))
    return candidates[0] if candidates else None


def load_open_clip_encoder(entry: EncoderEntry) -> OpenClipEncoder:
    """Load an encoder entry through open_clip's loaders. Never reaches the network unless the
    entry names hub weights (``pretrained`` tag or ``hf-hub``).

    Leaves the caller's state alone: torch's random state (random weights are made under
    :func:`torch.random.fork_rng`), torch's thread count (the entry's ``threads`` applies only
    around the encoder's own forward passes) and open_clip's model registry.
    """
    device = pick_device(entry.device)
    arch: ArchConfig
    pretrained: str | None = None
    if entry.weights in ("local-dir", "zoo"):
        zoo = entry.weights == "zoo"
        folder = zoo_dir(entry.path or "") if zoo else Path(entry.path or "").expanduser()
        fix = "reinstall viewfinder" if zoo else "point 'path' at a folder with open_clip_config.json and weights"
        if not (folder / "open_clip_config.json").is_file():
            raise ModelLoadError(f"model folder {folder} has no open_clip_config.json: {fix}")
        if entry.sha256:
            weights = _folder_weights(folder)
            if weights is None:
                raise ModelLoadError(f"model folder {folder} has no weights file to check against sha256: {fix}")
            _check_sha256(
                weights, entry.sha256, "reinstall viewfinder" if zoo else "replace the weights or fix 'sha256'"
            )
        model_cfg = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
        arch = ArchConfig(f"local-dir:{folder}", model_cfg, builtin=True)  # open_clip reads the folder itself
    elif entry.weights == "hf-hub":
        arch = ArchConfig(f"hf-hub:{entry.path}", {"hf_hub": entry.path}, builtin=True)
    else:
        arch = resolve_arch(entry.arch or "")
        if entry.weights == "pretrained":
            if not arch.builtin:
                raise ModelLoadError(
                    f"encoder {entry.name!r}: pretrained tags belong to open_clip's built-in architectures, and "
                    f"{entry.arch!r} is a JSON config: use an open_clip built-in name as 'arch', or weights: file"
                )
            pretrained = entry.pretrained
        elif entry.weights == "file":
            ckpt = Path(entry.path or "").expanduser()
            if not ckpt.is_file():
                raise ModelLoadError(f"checkpoint file not found: {ckpt}: fix 'path' in the model entry")
            _check_sha256(ckpt, entry.sha256, "replace the checkpoint or fix 'sha256' in the model entry")
            pretrained = str(ckpt)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(entry.seed)  # random init (all of it, for weights: random) is seeded
            created = create_open_clip(arch, pretrained=pretrained)
    except (RuntimeError, OSError, ValueError) as exc:
        hint = ""
        if entry.weights in ("pretrained", "hf-hub"):
            hint = (
                " (these weights come from a model hub: check the network, or download them once and"
                " use weights: file / local-dir)"
            )
        raise ModelLoadError(f"could not load encoder {entry.name!r} ({arch.name}): {exc}{hint}") from exc
    return OpenClipEncoder(
        created.model,
        created.transform,
        created.tokenizer,
        name=entry.name,
        arch_cfg=arch.config,
        device=device,
        precision=entry.precision,
        batch_size=entry.batch_size,
        threads=entry.threads,
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
    "ArchConfig",
    "OpenClipEncoder",
    "OpenClipModel",
    "create_open_clip",
    "ModelLoadError",
    "load_open_clip_encoder",
    "save_local_dir",
    "pick_device",
    "registered_arch",
    "resolve_arch",
    "describe_transform",
    "torch_threads",
    "zoo_dir",
]
