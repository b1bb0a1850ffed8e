"""The Python API in a few calls: build an index, open it, search it."""

from __future__ import annotations

from pathlib import Path

from ..adapters.registry import load_encoder, portable_entry
from .config import Preset, load_preset
from .store.indexer import Indexer, IndexReport
from .store.search import Searcher
from .store.sources import Modality


def build_index(
    source: str | Path,
    index_dir: str | Path,
    preset: str | Preset = "default",
    *,
    modality: Modality = "image",
    rebuild: bool = False,
    progress: bool | None = None,
) -> IndexReport:
    """Index a folder or JSONL manifest into ``index_dir`` (incremental; same as ``viewfinder index``)."""
    preset = load_preset(preset) if isinstance(preset, str) else preset
    encoder = load_encoder(preset.encoder)
    indexer = Indexer(encoder, preset.index, encoder_entry=portable_entry(preset.encoder), progress=progress)
    return indexer.run(source, index_dir, modality=modality, rebuild=rebuild)


def open_index(index_dir: str | Path, preset: str | Preset | None = None) -> Searcher:
    """A :class:`Searcher` over ``index_dir``, with the encoder recorded in the index (or the preset's)."""
    return Searcher.open(index_dir, preset)
