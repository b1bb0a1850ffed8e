"""Training-run configs: one YAML reader for every trained model (CLIP, reranker, captioner).

A run config is a dataclass whose fields are scalars (``name``, ``encoder``, ``arch`` given as a
name, ``out``) and sections (``arch``, ``data``, ``train``) that are dataclasses of their own;
unknown fields are errors that list the known ones.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from ...adapters.entries import ConfigError, config_root, from_dict, read_yaml

T = TypeVar("T")


def train_config_path(path: str | Path) -> Path:
    """A YAML file, or the name of a packaged training config (``configs/train/NAME.yaml``)."""
    path = Path(path)
    packaged = config_root() / "train" / f"{path}.yaml"
    return packaged if not path.exists() and packaged.is_file() else path


def load_run_config(path: str | Path, cls: type[T], required: tuple[str, ...] = ("name",)) -> T:
    """Read ``path`` into the run-config dataclass ``cls``: its dataclass-typed fields are read as sections."""
    path = train_config_path(path)
    data = read_yaml(path)
    where = str(path)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known fields: {sorted(fields)}")
    for name in required:
        if name not in data:
            raise ConfigError(f"{where}: field {name!r} is required")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, value in data.items():
        hint = section_type(hints[name])
        if hint is not None:
            values[name] = (
                None
                if value is None and hints[name] is not hint
                else build_section(hint, value or {}, f"{where}: {name}")
            )
        elif not isinstance(value, str):
            raise ConfigError(f"{where}: field {name!r} must be a string, got {value!r}")
        else:
            values[name] = value
    if "out" in fields and "out" not in values:
        values["out"] = f"runs/{values['name']}"
    return cls(**values)


def section_type(hint: Any) -> type | None:
    """The dataclass a field holds (``X`` or ``X | None``), or None for a plain field."""
    if dataclasses.is_dataclass(hint):
        return hint  # type: ignore[return-value]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None  # type: ignore[return-value]
    return None


def build_section(cls: type[T], data: Any, where: str) -> T:
    """Dataclass ``cls`` from a YAML mapping, its own dataclass-typed fields (optional ones too) read
    as nested sections."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    data = dict(data)
    for name, value in data.items():
        inner = section_type(hints[name]) if name in hints else None
        if inner is not None and isinstance(value, dict):
            data[name] = build_section(inner, value, f"{where}.{name}")
    return from_dict(cls, data, where)


def check_at_least_one(obj: Any, names: tuple[str, ...], section: str = "train") -> None:
    """``ConfigError`` naming the first of ``names`` whose value on ``obj`` is below 1."""
    for name in names:
        if getattr(obj, name) < 1:
            raise ConfigError(f"{section}: field {name!r} must be >= 1")


def warmup_cosine_lr(step: int, settings: Any) -> float:
    """Learning rate at ``step`` for a run's ``settings`` (``lr``, ``warmup_steps``, ``steps``): linear
    warm-up, then cosine decay to 0 at the last step."""
    lr, warmup, steps = settings.lr, settings.warmup_steps, settings.steps
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def saved_encoder_reference(encoder: str | dict[str, Any]) -> str | dict[str, Any]:
    """How a saved model names the CLIP it sits on: a packaged entry by name, anything else (a YAML
    path, a mapping) as its full portable entry, so the folder loads on another machine."""
    from ...adapters.entries import packaged_names
    from ...adapters.registry import load_encoder_entry, portable_entry

    if isinstance(encoder, dict):
        return encoder
    return encoder if encoder in packaged_names("models") else portable_entry(load_encoder_entry(encoder))
