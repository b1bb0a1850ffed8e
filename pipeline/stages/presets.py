"""Presets with their stages: loading a preset file (its stages validated against the registry),
and which preset a pipeline or a searcher over an existing index uses: the one asked for, or the
one it was built with."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from ...adapters.entries import ConfigError, config_root, from_dict, read_yaml, resolve_config_file
from ...adapters.registry import entry_from_manifest, load_encoder, load_encoder_entry
from ..config import IndexConfig, Preset
from ..store.index_store import IndexStore, StoreError
from ..store.records import RebuildNeededError
from ..store.search import Searcher
from .registry import parse_stages

logger = logging.getLogger(__name__)

_PRESET_FIELDS = ["encoder", "index", "name", "stages"]


def load_preset(name_or_file: str | Path = "default") -> Preset:
    """Load a pipeline preset by packaged name (``configs/presets/NAME.yaml``) or file path.

    Relative paths inside the file (``encoder: my-model.yaml``) are relative to its folder.
    """
    path = resolve_config_file("presets", str(name_or_file))
    data = read_yaml(path)
    where = str(path)
    unknown = sorted(set(data) - set(_PRESET_FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known fields: {_PRESET_FIELDS}")
    if "encoder" not in data:
        raise ConfigError(f"{where}: field 'encoder' is required (a model entry name or mapping)")
    packaged = path.resolve().parent == (config_root() / "presets").resolve()
    return Preset(
        name=data.get("name", path.stem),
        encoder=load_encoder_entry(data["encoder"], relative_to=path.parent),
        index=from_dict(IndexConfig, data.get("index") or {}, f"{where}: index"),
        stages=parse_stages(data.get("stages"), where),
        source=path.stem if packaged else str(path.resolve()),
    )


def with_overrides(preset: Preset, overrides: list[str]) -> Preset:
    """``preset`` with stage settings changed: each override is ``STAGE.FIELD=VALUE`` (the value read as
    YAML: ``normalise.n=4``, ``rewrite.ground=constrain``), checked as a preset file's would be."""
    from dataclasses import fields, replace

    stages = list(preset.stages)
    for override in overrides:
        target, sep, raw = override.partition("=")
        stage, dot, name = target.partition(".")
        if not sep or not dot:
            raise ConfigError(f"override {override!r}: write STAGE.FIELD=VALUE, e.g. normalise.n=4")
        matches = [i for i, spec in enumerate(stages) if spec.name == stage]
        if not matches:
            raise ConfigError(f"override {override!r}: preset {preset.name!r} has no stage {stage!r}")
        for i in matches:
            config = stages[i].config
            known = [f.name for f in fields(config)]
            if name not in known:
                raise ConfigError(f"override {override!r}: stage {stage!r} has no field {name!r}; known: {known}")
            stages[i] = replace(stages[i], config=replace(config, **{name: yaml.safe_load(raw)}))
    return replace(preset, stages=stages)


def load_preset_spec(spec: str) -> Preset:
    """A preset named with overrides, ``NAME[+STAGE.FIELD=VALUE...]`` (see :func:`with_overrides`)."""
    name, *overrides = spec.split("+")
    preset = load_preset(name)
    if overrides:
        from dataclasses import replace

        preset = replace(with_overrides(preset, overrides), name=spec)
    return preset


def preset_for_index(preset: str | Path | Preset | None, store: IndexStore) -> Preset:
    """``preset`` loaded, or (None) the preset recorded in the index, with the index's own encoder.

    An index records the packaged name or file of the preset it was built with; when that can no
    longer be loaded, the index's encoder entry with preselect only is used, and a warning says so.
    """
    if preset is not None:
        return load_preset(preset) if isinstance(preset, str | Path) else preset
    manifest = store.manifest
    if not manifest.encoder_entry:
        raise StoreError(f"index {store.path} records no encoder entry: name the preset to search it with")
    encoder = entry_from_manifest(manifest.encoder_entry)
    _check_zoo_release(encoder, store)
    source = (manifest.preset or {}).get("source")
    if source:
        try:
            recorded = load_preset(source)
        except ConfigError as exc:
            logger.warning(
                "index %s was built with preset %s, which cannot be loaded now (%s): "
                "searching with its encoder and preselect only",
                store.path,
                source,
                exc,
            )
        else:
            recorded.encoder = encoder
            return recorded
    return Preset(
        name=manifest.encoder_name,
        encoder=encoder,
        index=IndexConfig(factory=manifest.factory),
        stages=parse_stages(None, "preset"),
    )


def _check_zoo_release(recorded: Any, store: IndexStore) -> None:
    """An index built with a packaged zoo model of another release (its recorded weights checksum is not
    the one this install ships) is rebuilt, not read: its vectors come from other weights."""
    if getattr(recorded, "weights", None) != "zoo" or not getattr(recorded, "sha256", None):
        return
    try:
        current = load_encoder_entry(recorded.name)
    except ConfigError:
        return  # not a packaged name any more: loading the recorded entry says what is missing
    ours = getattr(current, "sha256", None)
    if getattr(current, "path", None) == recorded.path and ours and ours.lower() != recorded.sha256.lower():
        raise RebuildNeededError(
            f"index {store.path} was built with the zoo model {recorded.name!r} of another viewfinder release "
            f"(weights sha256 {recorded.sha256[:12]}..., this install ships {ours[:12]}...): its vectors come "
            "from other weights; rebuild it from its source with this release's model"
        )


def open_searcher(index_dir: str | Path, preset: str | Path | Preset | None = None) -> Searcher:
    """A :class:`Searcher` over ``index_dir`` with the preset given, or the one recorded in the index
    (its encoder, its search settings)."""
    store = IndexStore.open(index_dir)
    chosen = preset_for_index(preset, store)
    return Searcher(store, load_encoder(chosen.encoder), chosen.index)
