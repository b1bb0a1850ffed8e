"""Which preset a pipeline over an existing index runs: the one asked for, or the one it was built with."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ...adapters.entries import ConfigError
from ...adapters.registry import entry_from_manifest
from ..store.index_store import StoreError

if TYPE_CHECKING:
    from ..config import Preset
    from ..store.index_store import IndexStore

logger = logging.getLogger(__name__)


def preset_for_index(preset: str | Path | Preset | None, store: IndexStore) -> Preset:
    """``preset`` loaded, or (None) the preset recorded in the index, with the index's own encoder.

    An index records the packaged name or file of the preset it was built with; when that can no
    longer be loaded, the index's encoder entry with preselect only is used, and a warning says so.
    """
    from ..config import IndexConfig, Preset, load_preset

    if preset is not None:
        return load_preset(preset) if isinstance(preset, str | Path) else preset
    manifest = store.manifest
    if not manifest.encoder_entry:
        raise StoreError(f"index {store.path} records no encoder entry: pass --config")
    encoder = entry_from_manifest(manifest.encoder_entry)
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
    return Preset(name=manifest.encoder_name, encoder=encoder, index=IndexConfig(factory=manifest.factory))
