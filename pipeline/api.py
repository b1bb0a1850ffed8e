"""The Python API in a few calls: build an index, open it, search it."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..adapters.registry import load_encoder, portable_entry
from .config import Preset, preset_summary
from .stages.presets import load_preset, open_searcher, preset_for_index
from .store.index_store import IndexStore
from .store.indexer import Indexer, IndexReport
from .store.search import Searcher
from .store.sources import Modality

logger = logging.getLogger(__name__)


def preset_for_run(
    preset: str | Path | Preset | None,
    index_dir: str | Path,
    *,
    factory: str | None = None,
    num_workers: int | None = None,
    engine: str | None = None,
    ray_address: str | None = None,
    ray_actors: int | None = None,
) -> Preset:
    """The preset an indexing run into ``index_dir`` uses.

    ``preset`` when given. Otherwise the preset an existing index was built with, with its encoder and
    its FAISS factory (so a plain re-run never converts the index), or ``default`` for a new index.
    ``factory``, ``num_workers`` and the engine settings (``engine``, ``ray_address``, ``ray_actors``)
    override the index settings and are validated like a preset file's (a
    :class:`~viewfinder.pipeline.config.ConfigError` names the bad field).
    """
    overrides: dict[str, Any] = {}
    folder = Path(index_dir).expanduser()
    if preset is None and IndexStore.exists(folder):
        with IndexStore.open(folder) as store:
            if store.manifest.encoder_entry:
                chosen = preset_for_index(None, store)
            else:
                logger.info("index %s records no encoder entry: indexing with the default preset", folder)
                chosen = load_preset("default")
            overrides["factory"] = store.manifest.factory
    elif isinstance(preset, Preset):
        chosen = preset
    else:
        chosen = load_preset(preset or "default")
    if factory is not None:
        overrides["factory"] = factory
    given = {"num_workers": num_workers, "engine": engine, "ray_address": ray_address, "ray_actors": ray_actors}
    overrides.update({name: value for name, value in given.items() if value is not None})
    if overrides:
        chosen = replace(chosen, index=replace(chosen.index, **overrides))
    return chosen


def build_index(
    source: str | Path,
    index_dir: str | Path,
    preset: str | Preset | None = None,
    *,
    modality: Modality = "image",
    rebuild: bool = False,
    progress: bool | None = None,
    engine: str | None = None,
    ray_address: str | None = None,
) -> IndexReport:
    """Index a folder or JSONL manifest into ``index_dir`` (incremental; same as ``viewfinder index``).

    Without ``preset``, an existing index is updated with the preset (and FAISS factory) it was built
    with, and a new one is built with ``default``. ``engine="ray"`` embeds on Ray Data (a local Ray,
    or the cluster at ``ray_address``) with the same result.
    """
    chosen = preset_for_run(preset, index_dir, engine=engine, ray_address=ray_address)
    encoder = load_encoder(chosen.encoder)
    indexer = Indexer(
        encoder,
        chosen.index,
        encoder_entry=portable_entry(chosen.encoder),
        preset=preset_summary(chosen),
        progress=progress,
    )
    return indexer.run(source, index_dir, modality=modality, rebuild=rebuild)


def open_index(index_dir: str | Path, preset: str | Preset | None = None) -> Searcher:
    """A :class:`Searcher` over ``index_dir``, with the encoder recorded in the index (or the preset's)."""
    return open_searcher(index_dir, preset)
