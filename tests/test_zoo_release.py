"""An index built with a packaged zoo model of another release is rebuilt, not searched with other weights."""

from __future__ import annotations

import os
from types import SimpleNamespace

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

from viewfinder.adapters.registry import load_encoder_entry, portable_entry  # noqa: E402
from viewfinder.pipeline.stages.presets import preset_for_index  # noqa: E402
from viewfinder.pipeline.store.records import RebuildNeededError  # noqa: E402


def _store(entry: dict) -> SimpleNamespace:
    manifest = SimpleNamespace(encoder_entry=entry, preset=None, encoder_name=entry["name"], factory="Flat")
    return SimpleNamespace(path="/data/old-index", manifest=manifest)


def test_an_index_of_an_older_zoo_clip_asks_for_a_rebuild() -> None:
    recorded = portable_entry(load_encoder_entry("scene-clip"))
    recorded["sha256"] = "9eea22cdb2b473b32e8d921d3d3c172b9bf9d41802d46376f156203344c27091"  # the ViT release's
    with pytest.raises(RebuildNeededError, match=r"zoo model 'scene-clip' of another viewfinder release") as err:
        preset_for_index(None, _store(recorded))
    assert "9eea22cdb2b4" in str(err.value) and "rebuild it" in str(err.value)
    assert "checksum mismatch" not in str(err.value)


def test_an_index_of_this_release_opens_with_its_encoder() -> None:
    recorded = portable_entry(load_encoder_entry("scene-clip"))
    preset = preset_for_index(None, _store(recorded))
    assert preset.encoder.name == "scene-clip" and preset.encoder.sha256 == recorded["sha256"]
