"""The model registry: each model family registers its entry type and loader here, once.

A model entry names its ``family``; :func:`load_model` looks the family up and calls its loader,
imported on first use (so listing or validating entries imports no model library). Adding a
family means one adapter module and one :func:`register_family` line below, never an ``if`` on
the family name.

A model's folder can stand for its entry (a fine-tuned model as ``viewfinder train`` writes it in
``runs/NAME/model``, or a ``save_pretrained`` folder): the family whose ``folder`` check accepts
it loads it as a ``local-dir`` entry, with the entry's defaults for everything else.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Callable
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
    config_root,
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
    folder: Callable[[Path], bool] | None = None
    """Whether a model folder holds one of this family's models (None: the family has no folder form)."""
    folder_holds: str = ""
    """What such a folder holds, for messages (e.g. ``qformer_config.json``)."""

    def load(self, entry: Any) -> Any:
        module, _, function = self.loader.partition(":")
        return getattr(importlib.import_module(module, package=__package__), function)(entry)


_FAMILIES: dict[str, Family] = {}


def register_family(
    name: str,
    *,
    kind: ModelKind,
    entry_type: type,
    loader: str,
    folder: Callable[[Path], bool] | None = None,
    folder_holds: str = "",
) -> None:
    """Register a model family (a second registration of the same name replaces the first). ``folder``
    tells this family's model folders (``folder_holds`` says how, for messages); its entry type then
    needs ``weights: local-dir`` and ``path``."""
    _FAMILIES[name] = Family(name, kind, entry_type, loader, folder, folder_holds)


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
    """A model entry from a packaged name (``configs/models/NAME.yaml``), a YAML path, a model's folder
    (:func:`folder_entry`), a mapping (``{base: NAME, field: value}``: entry NAME with those fields
    changed), ``hf:ORG/NAME`` (a chat model on the hub, default settings), or an entry already built.
    Relative paths (of a YAML file or a folder) are taken relative to
    ``relative_to`` first, then to the current directory; relative paths inside a YAML file are
    relative to that file's folder."""
    if any(isinstance(name_or_file, fam.entry_type) for fam in _FAMILIES.values()):
        family(name_or_file.family, kind)
        return name_or_file
    if isinstance(name_or_file, dict) and "base" in name_or_file:
        # {base: scene-clip, precision: int8}: another entry with some fields changed (e.g. in a preset)
        data = dict(name_or_file)
        inherited = dataclasses.asdict(load_entry(data.pop("base"), kind, relative_to=relative_to))
        inherited.update(data)
        fam = family(str(inherited.get("family", "open_clip")), kind, "model entry")
        return from_dict(fam.entry_type, inherited, "model entry")
    if isinstance(name_or_file, dict):
        data, where, base = dict(name_or_file), "model entry", relative_to
    elif isinstance(name_or_file, str) and name_or_file.startswith(HUB_PREFIX):
        data, where, base = _hub_chat_entry(name_or_file, kind), name_or_file, None
    elif isinstance(name_or_file, str | Path) and (folder := _named_folder(name_or_file, relative_to)):
        return folder_entry(folder, kind)
    elif isinstance(name_or_file, str | Path):
        path = resolve_config_file("models", str(name_or_file), relative_to)
        data, where, base = read_yaml(path), str(path), path.parent
        data.setdefault("name", path.stem)
        if "base" in data:
            return load_entry(data, kind, relative_to=path.parent)
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


def _named_folder(name: str | Path, relative_to: Path | None) -> Path | None:
    """The folder ``name`` names, if it names one (beside ``relative_to`` first). A bare name of a
    packaged entry stays that entry, even where a folder of that name happens to exist."""
    text = str(name)
    if not text or text.startswith(HUB_PREFIX) or Path(text).suffix in (".yaml", ".yml"):
        return None
    path = Path(text).expanduser()
    bare = len(path.parts) == 1 and not text.startswith((".", "~"))
    if bare and (config_root() / "models" / f"{text}.yaml").is_file():
        return None
    for candidate in ([relative_to / path] if relative_to is not None and not path.is_absolute() else []) + [path]:
        if candidate.is_dir():
            return candidate.resolve()
    return None


def folder_entry(folder: str | Path, kind: ModelKind | None = None) -> Any:
    """The entry of a model's folder: a fine-tuned model as ``viewfinder train`` writes it
    (``runs/NAME/model``: a reranker's ``qformer_config.json``, a captioner's ``captioner_config.json``,
    a CLIP's ``open_clip_config.json``) or a transformers ``save_pretrained`` folder (BLIP-2, a causal
    LM). Its saved config says its family; the entry is ``local-dir`` with that family's defaults. A
    folder that holds no model of ``kind`` is a :class:`ConfigError` that says what it holds instead."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such model folder")
    found = [fam for fam in _FAMILIES.values() if fam.folder is not None and fam.folder(folder)]
    fits = [fam for fam in found if kind is None or fam.kind == kind]
    if len(fits) == 1:
        data = {"name": str(folder), "family": fits[0].name, "weights": "local-dir", "path": str(folder)}
        return from_dict(fits[0].entry_type, data, str(folder))
    wanted = f"a {kind}" if kind else "a model"
    held = " and ".join(f"a {fam.kind} ({fam.name})" for fam in fits or found)
    if len(fits) > 1:
        raise ConfigError(f"{folder} holds {held}: write a model entry that names the family to load")
    if found:
        raise ConfigError(f"{folder} holds {held}, not {wanted}")
    known = [
        f"{fam.folder_holds} ({fam.name})"
        for fam in _FAMILIES.values()
        if fam.folder is not None and fam.folder_holds and (kind is None or fam.kind == kind)
    ]
    hint = ""
    if (folder / "model").is_dir():
        hint = f" (a training run's model is in its model folder: {folder / 'model'})"
    elif (folder / "adapter_config.json").is_file():
        hint = " (it holds a LoRA adapter: name it as the 'adapter' of a chat model entry)"
    raise ConfigError(
        f"{folder} is not a model folder{hint}: {wanted}'s folder holds {' or '.join(known) or 'a saved model'}, "
        "as `viewfinder train` writes it in runs/NAME/model; or name a model entry (a packaged name or a YAML file)"
    )


def _holds(name: str) -> Callable[[Path], bool]:
    """A folder check: the folder holds the file ``name``."""
    return lambda folder: (folder / name).is_file()


def _transformers_folder(model_type: str | None, architecture: Callable[[str], bool]) -> Callable[[Path], bool]:
    """A folder check: a transformers ``config.json`` of ``model_type`` (any when None) whose
    ``architectures`` include one that ``architecture`` accepts."""

    def check(folder: Path) -> bool:
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        if not isinstance(config, dict) or (model_type is not None and config.get("model_type") != model_type):
            return False
        return any(isinstance(a, str) and architecture(a) for a in config.get("architectures") or [])

    return check


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
    "open_clip",
    kind="encoder",
    entry_type=EncoderEntry,
    loader=".open_clip_encoder:load_open_clip_encoder",
    folder=_holds("open_clip_config.json"),
    folder_holds="open_clip_config.json",
)
register_family(
    "qformer_clip",
    kind="matcher",
    entry_type=ModelEntry,
    loader=".qformer_matcher:load_qformer_matcher",
    folder=_holds("qformer_config.json"),
    folder_holds="qformer_config.json",
)
register_family(
    "blip2",
    kind="matcher",
    entry_type=ModelEntry,
    loader=".blip2_matcher:load_blip2_matcher",
    folder=_transformers_folder("blip-2", lambda arch: arch == "Blip2ForImageTextRetrieval"),
    folder_holds="a Blip2ForImageTextRetrieval config.json",
)
register_family(
    "blip2_captioner",
    kind="captioner",
    entry_type=ModelEntry,
    loader=".blip2_captioner:load_blip2_captioner",
    folder=_transformers_folder("blip-2", lambda arch: arch == "Blip2ForConditionalGeneration"),
    folder_holds="a Blip2ForConditionalGeneration config.json",
)
register_family(
    "qformer_clip_captioner",
    kind="captioner",
    entry_type=ModelEntry,
    loader=".qformer_captioner:load_qformer_captioner",
    folder=_holds("captioner_config.json"),
    folder_holds="captioner_config.json",
)
register_family(
    "transformers_chat",
    kind="chat",
    entry_type=ChatEntry,
    loader=".chat:load_transformers_chat",
    folder=_transformers_folder(None, lambda arch: arch.endswith("ForCausalLM")),
    folder_holds="a causal LM's config.json",
)
register_family("langchain_chat", kind="chat", entry_type=LangChainEntry, loader=".chat:load_langchain_chat")
