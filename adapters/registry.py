"""The model registry: each model family registers its entry type and loader here, once.

A model entry names its ``family``; :func:`load_model` looks the family up and calls its loader,
imported on first use (so listing or validating entries imports no model library). Adding a
family means one adapter module and one :func:`register_family` line below, never an ``if`` on
the family name.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .base import ImageTextEncoder
from .entries import (
    ChatEntry,
    ConfigError,
    EncoderEntry,
    LangChainEntry,
    ModelEntry,
    from_dict,
    read_yaml,
    resolve_config_file,
    to_plain,
)

ModelKind = Literal["encoder", "matcher", "captioner", "chat", "identifier"]


@dataclass(frozen=True)
class Family:
    """One model family: what kind of model it gives, how its entries read, and its loader."""

    name: str
    kind: ModelKind
    entry_type: type
    """Dataclass its model entries are read into."""
    loader: str
    """``module:function`` (module relative to :mod:`viewfinder.adapters`), imported on first use."""

    def load(self, entry: Any) -> Any:
        module, _, function = self.loader.partition(":")
        return getattr(importlib.import_module(module, package=__package__), function)(entry)


_FAMILIES: dict[str, Family] = {}


def register_family(name: str, *, kind: ModelKind, entry_type: type, loader: str) -> None:
    """Register a model family (a second registration of the same name replaces the first)."""
    _FAMILIES[name] = Family(name, kind, entry_type, loader)


def families(kind: ModelKind | None = None) -> list[str]:
    """Registered family names (of one kind, if given)."""
    return sorted(name for name, fam in _FAMILIES.items() if kind is None or fam.kind == kind)


def family(name: str, kind: ModelKind | None = None, where: str = "model entry") -> Family:
    """The registered family ``name``; a :class:`ConfigError` naming the known ones otherwise."""
    fam = _FAMILIES.get(name)
    if fam is None or (kind is not None and fam.kind != kind):
        raise ConfigError(f"{where}: unknown {kind or 'model'} family {name!r}; registered: {families(kind)}")
    return fam


_PATH_FIELDS = {"file": "path", "local-dir": "path"}


def load_entry(
    name_or_file: Any,
    kind: ModelKind | None = None,
    *,
    relative_to: Path | None = None,
) -> Any:
    """A model entry from a packaged name (``configs/models/NAME.yaml``), a YAML path, a mapping,
    ``hf:ORG/NAME`` (a chat model on the hub, default settings), or an entry already built. Relative
    paths inside a YAML file are relative to that file's folder."""
    if any(isinstance(name_or_file, fam.entry_type) for fam in _FAMILIES.values()):
        family(name_or_file.family, kind)
        return name_or_file
    if isinstance(name_or_file, dict):
        data, where, base = dict(name_or_file), "model entry", relative_to
    elif isinstance(name_or_file, str) and name_or_file.startswith(HUB_PREFIX):
        data, where, base = _hub_chat_entry(name_or_file, kind), name_or_file, None
    elif isinstance(name_or_file, str | Path):
        path = resolve_config_file("models", str(name_or_file), relative_to)
        data, where, base = read_yaml(path), str(path), path.parent
        data.setdefault("name", path.stem)
    else:
        raise ConfigError(f"a model entry must be a name, a YAML path or a mapping, got {type(name_or_file).__name__}")
    fam = family(str(data.get("family", "open_clip")), kind, where)
    if base is not None:
        _anchor_paths(data, base)
    return from_dict(fam.entry_type, data, where)


HUB_PREFIX = "hf:"
"""``hf:ORG/NAME`` names an instruct model on the Hugging Face hub as a chat model, with no entry file."""


def _hub_chat_entry(name: str, kind: ModelKind | None) -> dict[str, Any]:
    repo = name.removeprefix(HUB_PREFIX).strip()
    if kind not in (None, "chat"):
        raise ConfigError(f"{name!r}: the {HUB_PREFIX} shorthand names chat models; write a model entry for a {kind}")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ConfigError(f"{name!r}: write {HUB_PREFIX}ORG/NAME, e.g. hf:HuggingFaceTB/SmolLM2-360M-Instruct")
    return {"name": repo, "family": "transformers_chat", "weights": "hf-hub", "path": repo}


def _anchor_paths(data: dict[str, Any], base: Path) -> None:
    """Make a YAML file's relative local paths relative to its folder (not to the current directory)."""
    field_name = _PATH_FIELDS.get(str(data.get("weights")))
    if field_name and isinstance(data.get(field_name), str):
        local = Path(data[field_name]).expanduser()
        if not local.is_absolute():
            data[field_name] = str(base / local)
    arch = data.get("arch")
    if isinstance(arch, str) and arch.endswith(".json") and not Path(arch).expanduser().is_absolute():
        data["arch"] = str(base / arch)


def load_model(entry: Any, kind: ModelKind | None = None) -> Any:
    """Load the model an entry describes through its family's loader."""
    entry = load_entry(entry, kind)
    return family(entry.family, kind).load(entry)


def load_encoder(entry: EncoderEntry | str | dict[str, Any]) -> ImageTextEncoder:
    """Load a dual encoder (an entry, a packaged name, a YAML path, or a dict)."""
    return load_model(entry, "encoder")


def load_encoder_entry(
    name_or_file: EncoderEntry | str | dict[str, Any], relative_to: Path | None = None
) -> EncoderEntry:
    """An encoder entry by packaged name, YAML path or mapping."""
    return load_entry(name_or_file, "encoder", relative_to=relative_to)


def portable_entry(entry: Any) -> dict[str, Any]:
    """The entry as a dict to record in an index manifest, with file paths made absolute."""
    data = to_plain(entry)
    if getattr(entry, "weights", None) in ("file", "local-dir") and entry.path:
        data["path"] = str(Path(entry.path).expanduser().resolve())
    arch = getattr(entry, "arch", None)
    if arch and arch.endswith(".json") and os.path.exists(arch):
        data["arch"] = str(Path(arch).resolve())
    return data


def entry_from_manifest(data: dict[str, Any]) -> Any:
    """The model entry an index manifest recorded."""
    fam = family(str(data.get("family", "open_clip")), where="index manifest: encoder_entry")
    return from_dict(fam.entry_type, data, "index manifest: encoder_entry")


register_family(
    "open_clip", kind="encoder", entry_type=EncoderEntry, loader=".open_clip_encoder:load_open_clip_encoder"
)
register_family("qformer_clip", kind="matcher", entry_type=ModelEntry, loader=".qformer_matcher:load_qformer_matcher")
register_family("blip2", kind="matcher", entry_type=ModelEntry, loader=".blip2_matcher:load_blip2_matcher")
register_family(
    "blip2_captioner", kind="captioner", entry_type=ModelEntry, loader=".blip2_captioner:load_blip2_captioner"
)
register_family(
    "qformer_clip_captioner",
    kind="captioner",
    entry_type=ModelEntry,
    loader=".qformer_captioner:load_qformer_captioner",
)
register_family("transformers_chat", kind="chat", entry_type=ChatEntry, loader=".chat:load_transformers_chat")
register_family("langchain_chat", kind="chat", entry_type=LangChainEntry, loader=".chat:load_langchain_chat")
