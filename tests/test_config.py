"""Configs: YAML -> typed dataclasses, unknown keys and bad choices rejected, packaged lookup."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from viewfinder.pipeline.config import (
    ConfigError,
    EncoderEntry,
    IndexConfig,
    Preset,
    config_root,
    from_dict,
    load_encoder_entry,
    to_plain,
)
from viewfinder.pipeline.stages.presets import load_preset


def _write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ unknown keys
def test_unknown_encoder_key_is_rejected_naming_it():
    with pytest.raises(ConfigError, match="batchsize") as info:
        load_encoder_entry({"name": "x", "arch": "tiny-test", "batchsize": 8})
    assert "batch_size" in str(info.value)  # the known fields are listed, so the typo is obvious


def test_unknown_index_key_in_preset_is_rejected(tmp_path):
    path = _write_yaml(tmp_path / "p.yaml", {"encoder": "tiny-test", "index": {"nprobes": 4}})
    with pytest.raises(ConfigError, match="nprobes"):
        load_preset(str(path))


def test_unknown_top_level_preset_key_is_rejected(tmp_path):
    path = _write_yaml(tmp_path / "p.yaml", {"encoder": "tiny-test", "reranker": {"k": 3}})
    with pytest.raises(ConfigError, match="reranker"):
        load_preset(str(path))


def test_unknown_key_in_model_entry_file_is_rejected(tmp_path):
    path = _write_yaml(tmp_path / "m.yaml", {"arch": "tiny-test", "weights": "random", "colour": "red"})
    with pytest.raises(ConfigError, match="colour"):
        load_encoder_entry(str(path))


# ------------------------------------------------------------------------------ Literal choices
@pytest.mark.parametrize(
    ("field", "value"),
    [("weights", "download"), ("family", "timm"), ("precision", "fp8"), ("device", "tpu")],
)
def test_literal_choices_are_checked(field, value):
    data = {"name": "x", "arch": "tiny-test", field: value}
    with pytest.raises(ConfigError, match=field) as info:
        load_encoder_entry(data)
    assert repr(value) in str(info.value)


def test_literal_choices_accept_every_documented_value():
    for precision in ("fp32", "fp16", "bf16"):
        assert load_encoder_entry({"name": "x", "arch": "a", "precision": precision}).precision == precision


# ------------------------------------------------------------------------------ required fields
@pytest.mark.parametrize(
    ("data", "missing"),
    [
        ({"weights": "random"}, "arch"),
        ({"weights": "file", "path": "m.pt"}, "arch"),
        ({"weights": "pretrained", "pretrained": "openai"}, "arch"),
        ({"weights": "pretrained", "arch": "ViT-B-32"}, "pretrained"),
        ({"weights": "file", "arch": "tiny-test"}, "path"),
        ({"weights": "local-dir"}, "path"),
        ({"weights": "hf-hub"}, "path"),
        ({"weights": "zoo"}, "path"),
    ],
)
def test_required_fields_per_weights_source(data, missing):
    with pytest.raises(ConfigError, match=f"'{missing}'"):
        load_encoder_entry({"name": "x", **data})


@pytest.mark.parametrize(
    "data",
    [
        {"weights": "local-dir", "path": "some/folder"},  # no arch needed: the folder has its config
        {"weights": "hf-hub", "path": "org/repo"},
        {"weights": "zoo", "path": "scene-clip"},
        {"weights": "file", "arch": "tiny-test", "path": "m.pt"},
    ],
)
def test_complete_entries_are_accepted(data):
    entry = load_encoder_entry({"name": "x", **data})
    assert isinstance(entry, EncoderEntry)
    assert entry.weights == data["weights"]


def test_missing_name_in_inline_entry_is_a_config_error():
    with pytest.raises(ConfigError):
        load_encoder_entry({"arch": "tiny-test"})


@pytest.mark.parametrize(
    ("cls", "data", "field"),
    [
        (IndexConfig, {"nprobe": -1}, "nprobe"),
        (IndexConfig, {"target_recall": 1.0}, "target_recall"),
        (IndexConfig, {"engine": "spark"}, "engine"),
        (IndexConfig, {"checkpoint_every": 0}, "checkpoint_every"),
        (IndexConfig, {"num_workers": -1}, "num_workers"),
        (IndexConfig, {"factory": "  "}, "factory"),
        (EncoderEntry, {"name": "x", "arch": "a", "batch_size": 0}, "batch_size"),
        (EncoderEntry, {"name": "x", "arch": "a", "threads": 0}, "threads"),
    ],
)
def test_out_of_range_values_name_the_field(cls, data, field):
    with pytest.raises(ConfigError, match=field):
        from_dict(cls, data, "test")


@pytest.mark.parametrize(
    ("cls", "data", "field"),
    [
        (IndexConfig, {"factory": 5}, "factory"),
        (IndexConfig, {"batch_size": "big"}, "batch_size"),
    ],
)
def test_wrongly_typed_values_are_config_errors_naming_the_field(cls, data, field):
    with pytest.raises(ConfigError, match=field):
        from_dict(cls, data, "test")


def test_preset_needs_an_encoder(tmp_path):
    path = _write_yaml(tmp_path / "p.yaml", {"index": {"factory": "Flat"}})
    with pytest.raises(ConfigError, match="'encoder'"):
        load_preset(str(path))


def test_malformed_yaml_and_missing_file_are_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("encoder: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_preset(str(bad))
    with pytest.raises(ConfigError, match="not found"):
        load_preset(str(tmp_path / "nope.yaml"))
    top_list = tmp_path / "list.yaml"
    top_list.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_preset(str(top_list))


# ------------------------------------------------------------------------------ preset lookup
def test_packaged_preset_resolves_by_name():
    preset = load_preset("tiny")
    assert isinstance(preset, Preset)
    assert preset.name == "tiny"
    assert preset.encoder.name == "tiny-test"
    assert preset.encoder.arch == "tiny-test"
    assert preset.encoder.weights == "random"
    assert preset.index.factory == "Flat"
    assert preset.index.num_workers == 0
    assert preset.index.checkpoint_every == 16


def test_preset_resolves_by_file_path_with_inline_encoder(tmp_path):
    path = _write_yaml(
        tmp_path / "mine.yaml",
        {
            "encoder": {"name": "custom", "arch": "tiny-test", "seed": 7, "batch_size": 4},
            "index": {"factory": "HNSW", "ef_search": 32},
        },
    )
    preset = load_preset(str(path))
    assert preset.name == "mine"
    assert preset.encoder.name == "custom" and preset.encoder.seed == 7 and preset.encoder.batch_size == 4
    assert preset.index.factory == "HNSW" and preset.index.ef_search == 32
    assert preset.index.nprobe == IndexConfig().nprobe  # defaults kept for the rest


def test_preset_file_referring_to_packaged_model_entry(tmp_path):
    path = _write_yaml(tmp_path / "p.yml", {"name": "renamed", "encoder": "tiny-test"})
    preset = load_preset(str(path))
    assert preset.name == "renamed"
    assert preset.encoder == load_encoder_entry("tiny-test")


def test_unknown_preset_name_lists_the_packaged_ones():
    with pytest.raises(ConfigError) as info:
        load_preset("no-such-preset")
    message = str(info.value)
    assert "no-such-preset" in message and "tiny" in message


def test_model_entry_name_defaults_to_file_stem():
    entry = load_encoder_entry("tiny-test")
    assert entry.name == "tiny-test"
    assert entry.seed == 0 and entry.batch_size == 32


def test_folder_in_cwd_named_like_a_preset_does_not_shadow_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()  # e.g. `viewfinder index photos --index tiny -c tiny`
    assert load_preset("tiny").encoder.name == "tiny-test"


# ------------------------------------------------------------------------------ packaged configs
def test_packaged_configs_found_through_importlib_resources(tmp_path, monkeypatch):
    from importlib import resources

    root = config_root()
    assert root == Path(str(resources.files("viewfinder.configs")))
    assert (root / "presets" / "tiny.yaml").is_file()
    assert (root / "models" / "tiny-test.yaml").is_file()
    assert (root / "arch" / "tiny-test.json").is_file()
    # Not relative to the working directory: loading works from an unrelated, empty folder.
    monkeypatch.chdir(tmp_path)
    assert load_preset("tiny").encoder.arch == "tiny-test"
    assert load_encoder_entry("tiny-test").weights == "random"


def test_to_plain_round_trips_through_from_dict():
    preset = load_preset("tiny")
    plain = to_plain(preset.encoder)
    assert from_dict(EncoderEntry, plain, "roundtrip") == preset.encoder
    assert from_dict(IndexConfig, to_plain(preset.index), "roundtrip") == preset.index


@pytest.mark.parametrize(
    "train, field",
    [
        ({"twin_kinds": ["reshape", "grow"]}, "twin_kinds"),
        ({"twin_kinds": []}, "twin_kinds"),
        ({"filler_prob": 1.5}, "filler_prob"),
        ({"max_fillers": -1}, "max_fillers"),
    ],
)
def test_training_settings_are_checked_naming_the_field(tmp_path, train, field):
    from viewfinder.pipeline.train.clip import load_train_config

    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "arch": "tiny-test", "train": train}))
    with pytest.raises(ConfigError, match=field):
        load_train_config(path)


def test_shipped_training_config_loads():
    from viewfinder.pipeline.train.clip import load_train_config

    cfg = load_train_config("scene-clip")
    assert cfg.train.twin_kinds and 0 < cfg.train.filler_prob <= 1
