"""YAML configs turned into typed dataclasses at the boundary.

Three kinds of file live in ``configs/`` (found through :mod:`importlib.resources`, so they
work from an installed wheel):

* ``configs/models/<name>.yaml`` — a model entry: *which architecture* and *which weights*.
* ``configs/presets/<name>.yaml`` — a pipeline preset: the encoder entry plus stage settings.
* ``configs/arch/<name>.json`` — open_clip architecture configs (data, not code).

Unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

logger = logging.getLogger(__name__)

T = TypeVar("T")

WeightSource = Literal["random", "pretrained", "file", "local-dir", "hf-hub", "zoo"]


class ConfigError(ValueError):
    """A config file or value is invalid; the message says which field and how to fix it."""


def config_root() -> Path:
    """Folder holding the packaged configs (works for editable and wheel installs)."""
    return Path(str(resources.files("viewfinder.configs")))


@dataclass
class EncoderEntry:
    """A dual-encoder model entry: the architecture and, separately, where its weights come from."""

    name: str
    """Name of the entry (shown in logs, recorded in index manifests)."""
    family: Literal["open_clip"] = "open_clip"
    """Adapter family that loads it."""
    arch: str | None = None
    """Architecture: an open_clip built-in (``ViT-B-32``), a file in ``configs/arch`` without
    ``.json``, or a path to an open_clip JSON config. Not needed for ``local-dir``/``hf-hub``/``zoo``."""
    weights: WeightSource = "random"
    """Where weights come from: ``random`` init (seeded), an open_clip ``pretrained`` tag, a
    checkpoint ``file`` (.pt/.bin/.safetensors), an open_clip ``local-dir`` folder, an ``hf-hub``
    repo, or a ``zoo`` folder shipped inside the package."""
    pretrained: str | None = None
    """open_clip pretrained tag, e.g. ``laion2b_s34b_b79k`` (weights: pretrained)."""
    path: str | None = None
    """Checkpoint file, local-dir folder, hf-hub repo id, or zoo folder name."""
    sha256: str | None = None
    """Expected SHA-256 of a checkpoint file loaded from outside the package (checked if set)."""
    seed: int = 0
    """Seed for random initialisation (weights: random)."""
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    """Inference precision on CUDA; CPU always runs fp32."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` picks CUDA when present."""
    batch_size: int = 64
    """Images or texts per forward pass."""
    threads: int | None = None
    """CPU threads for torch (None: leave torch's default / OMP_NUM_THREADS)."""

    def __post_init__(self) -> None:
        if self.weights in ("random", "pretrained", "file") and not self.arch:
            raise ConfigError(f"encoder '{self.name}': field 'arch' is required for weights={self.weights!r}")
        if self.weights == "pretrained" and not self.pretrained:
            raise ConfigError(f"encoder '{self.name}': field 'pretrained' (a tag) is required for weights='pretrained'")
        if self.weights in ("file", "local-dir", "hf-hub", "zoo") and not self.path:
            raise ConfigError(f"encoder '{self.name}': field 'path' is required for weights={self.weights!r}")
        if self.batch_size < 1:
            raise ConfigError(f"encoder '{self.name}': field 'batch_size' must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"encoder '{self.name}': field 'threads' must be >= 1 or null")


@dataclass
class IndexConfig:
    """How a collection is indexed and searched."""

    factory: str = "Flat"
    """FAISS index: a preset (``Flat``, ``IVF``, ``IVFPQ``, ``HNSW``) or any FAISS factory
    string (``IVF1024,Flat``, ``HNSW32``, ``PQ64``…). Inner product on L2-normalised vectors."""
    nprobe: int = 16
    """IVF lists visited per query."""
    ef_search: int = 64
    """HNSW search breadth."""
    batch_size: int = 64
    """Images decoded and encoded per batch."""
    num_workers: int = 2
    """Decoding worker processes (0: decode in the main process)."""
    checkpoint_every: int = 512
    """Embeddings are checkpointed to disk every this many items, so a killed run resumes."""
    max_image_pixels: int = 89_478_485
    """Decompression-bomb limit: larger images are skipped (PIL's default limit)."""

    def __post_init__(self) -> None:
        for name in ("nprobe", "ef_search", "batch_size", "checkpoint_every", "max_image_pixels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"index: field {name!r} must be >= 1")
        if self.num_workers < 0:
            raise ConfigError("index: field 'num_workers' must be >= 0")
        if not self.factory.strip():
            raise ConfigError("index: field 'factory' must not be empty")


@dataclass
class Preset:
    """A pipeline preset: which models, and the stage settings."""

    name: str
    encoder: EncoderEntry
    index: IndexConfig = field(default_factory=IndexConfig)


def from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and checking Literal fields."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known fields: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        allowed = _literal_choices(hints[key])
        if allowed is not None and value not in allowed:
            raise ConfigError(f"{where}: field {key!r} must be one of {list(allowed)}, got {value!r}")
        if allowed is None and not _type_ok(hints[key], value):
            expected = getattr(hints[key], "__name__", str(hints[key]))
            raise ConfigError(f"{where}: field {key!r} must be of type {expected}, got {value!r}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


_SCALARS: dict[Any, tuple[type, ...]] = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}


def _type_ok(hint: Any, value: Any) -> bool:
    """Whether ``value`` fits a scalar type hint (bools are not ints here); other hints pass."""
    if get_origin(hint) in (typing.Union, types.UnionType):
        return any(_type_ok(arg, value) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if hint in _SCALARS:
        return isinstance(value, _SCALARS[hint]) and (hint is bool or not isinstance(value, bool))
    return True


def _literal_choices(hint: Any) -> tuple[Any, ...] | None:
    if get_origin(hint) is Literal:
        return get_args(hint)
    if get_origin(hint) in (typing.Union, types.UnionType):
        for arg in get_args(hint):
            choices = _literal_choices(arg)
            if choices is not None:
                return (*choices, None)
    return None


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for a missing or malformed file."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    return data


def _resolve(kind: str, name_or_file: str) -> Path:
    candidate = Path(name_or_file).expanduser()
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        return candidate
    packaged = config_root() / kind / f"{name_or_file}.yaml"
    if packaged.is_file():
        return packaged
    available = sorted(p.stem for p in (config_root() / kind).glob("*.yaml"))
    raise ConfigError(f"no {kind[:-1]} named {name_or_file!r}; packaged ones: {available}, or pass a YAML file path")


def load_encoder_entry(name_or_file: str | dict[str, Any]) -> EncoderEntry:
    """Load a model entry by packaged name (``configs/models/NAME.yaml``), file path, or inline dict."""
    if isinstance(name_or_file, dict):
        return from_dict(EncoderEntry, name_or_file, "encoder")
    path = _resolve("models", name_or_file)
    data = read_yaml(path)
    data.setdefault("name", path.stem)
    return from_dict(EncoderEntry, data, str(path))


def load_preset(name_or_file: str = "default") -> Preset:
    """Load a pipeline preset by packaged name (``configs/presets/NAME.yaml``) or file path."""
    path = _resolve("presets", name_or_file)
    data = read_yaml(path)
    where = str(path)
    unknown = sorted(set(data) - {"name", "encoder", "index"})
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known fields: ['encoder', 'index', 'name']")
    if "encoder" not in data:
        raise ConfigError(f"{where}: field 'encoder' is required (a model entry name or mapping)")
    return Preset(
        name=data.get("name", path.stem),
        encoder=load_encoder_entry(data["encoder"]),
        index=from_dict(IndexConfig, data.get("index") or {}, f"{where}: index"),
    )


def to_plain(obj: Any) -> Any:
    """Dataclass -> JSON/YAML-ready dict (for saving next to what a config produced)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj
