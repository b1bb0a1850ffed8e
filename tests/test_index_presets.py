"""Which preset and FAISS factory an indexing run uses: the recorded ones on a plain re-run, validated
overrides (--factory, --workers) refused before anything is embedded, and announced factory changes."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pytest
import yaml
from helpers import CountingEncoder, check_store_invariants, random_image, tiny_index_config
from typer.testing import CliRunner

from viewfinder.pipeline.api import build_index, preset_for_run
from viewfinder.pipeline.cli import app
from viewfinder.pipeline.config import ConfigError
from viewfinder.pipeline.stages.presets import load_preset
from viewfinder.pipeline.store.faiss_index import IndexBuildError
from viewfinder.pipeline.store.index_store import IndexStore
from viewfinder.pipeline.store.indexer import Indexer, check_factory

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """Text with Rich's table borders dropped and whitespace normalised."""
    return " ".join("".join(" " if "\u2500" <= ch <= "\u257f" else ch for ch in text).split())


def manifest(index_dir):
    return json.loads((index_dir / "manifest.json").read_text())


# ------------------------------------------------------------------------------ bad factories and flags
@pytest.mark.parametrize(("factory", "why"), [("Foo123", "could not parse"), ("PQ5x8", "multiple")])
def test_bad_factory_is_refused_before_any_embedding(tmp_path, make_images, tiny_encoder, factory, why):
    make_images(4)
    counting = CountingEncoder(tiny_encoder)
    with pytest.raises(IndexBuildError, match=why) as info:
        Indexer(counting, tiny_index_config(factory=factory), progress=False).run(tmp_path / "images", tmp_path / "ix")
    assert factory in str(info.value) and "HNSW32" in str(info.value)  # what to use instead
    assert counting.embedded == 0
    assert not (tmp_path / "ix").exists()  # refused before the index folder was made


def test_check_factory_resolves_presets(tiny_encoder):
    assert check_factory("HNSW", 32, 10) == "HNSW32,Flat"
    assert check_factory("IVF", 32, 400) == "IVF10,Flat"
    assert check_factory("IVF1024,Flat", 32, 0) == "IVF1024,Flat"  # parsed; its training size is checked later


def test_cli_bad_factory_is_exit_2_before_embedding(tmp_path, make_images):
    make_images(3)
    result = invoke("index", tmp_path / "images", "--index", tmp_path / "ix", "-c", "tiny", "--factory", "Foo123")
    assert result.exit_code == 2, result.output
    assert "Foo123" in flat(result.stderr) and "Traceback" not in result.output
    assert not (tmp_path / "ix").exists()


@pytest.mark.parametrize(
    ("flag", "value", "field"), [("--workers", "-1", "num_workers"), ("--factory", " ", "factory")]
)
def test_cli_index_overrides_are_validated(tmp_path, make_images, flag, value, field):
    make_images(2)
    result = invoke("index", tmp_path / "images", "--index", tmp_path / "ix", "-c", "tiny", flag, value)
    assert result.exit_code == 2, result.output
    assert field in flat(result.stderr) and "Traceback" not in result.output
    assert not (tmp_path / "ix").exists()


def test_preset_for_run_validates_overrides(tmp_path):
    with pytest.raises(ConfigError, match="num_workers"):
        preset_for_run("tiny", tmp_path / "new", num_workers=-2)
    preset = preset_for_run("tiny", tmp_path / "new", factory="HNSW", num_workers=0)
    assert (preset.index.factory, preset.index.num_workers) == ("HNSW", 0)
    assert load_preset("tiny").index.factory == "Flat"  # the packaged preset is not modified


# ------------------------------------------------------------------------------ re-runs keep the preset
def test_plain_rerun_keeps_hnsw_and_the_preset(tmp_path, make_images):
    source, index_dir = tmp_path / "images", tmp_path / "ix"
    make_images(12)
    first = invoke("index", source, "--index", index_dir, "-c", "tiny", "--factory", "HNSW")
    assert first.exit_code == 0, first.output
    built = manifest(index_dir)
    assert built["faiss_spec"] == "HNSW32,Flat"
    assert built["preset"] == {"name": "tiny", "source": "tiny", "factory": "HNSW"}

    random_image(np.random.default_rng(1)).save(source / "new.png")
    (source / "img0003.jpg").unlink()
    again = invoke("index", source, "--index", index_dir)  # no --config, no --factory
    assert again.exit_code == 0, again.output
    after = manifest(index_dir)
    assert (after["factory"], after["faiss_spec"], after["preset"]) == ("HNSW", "HNSW32,Flat", built["preset"])
    assert after["count"] == 12 and after["generation"] == built["generation"] + 1
    assert "FAISS factory changed" not in flat(again.output)
    assert json.loads((index_dir / "last_run.json").read_text())["factory_change"] is None
    check_store_invariants(index_dir)


def test_plain_rerun_keeps_a_preset_file_and_its_factory(tmp_path, make_images):
    source, index_dir = tmp_path / "images", tmp_path / "ix"
    make_images(45)
    preset_file = tmp_path / "mine.yaml"
    preset_file.write_text(yaml.safe_dump({"name": "mine", "encoder": "tiny-test", "index": {"factory": "IVF"}}))
    assert invoke("index", source, "--index", index_dir, "-c", preset_file).exit_code == 0
    assert manifest(index_dir)["preset"] == {"name": "mine", "source": str(preset_file.resolve()), "factory": "IVF"}
    random_image(np.random.default_rng(2)).save(source / "new.png")
    again = invoke("index", source, "--index", index_dir)
    assert again.exit_code == 0, again.output
    after = manifest(index_dir)
    assert after["factory"] == "IVF" and after["faiss_spec"].startswith("IVF") and after["count"] == 46
    assert after["preset"]["name"] == "mine"


def test_build_index_without_a_preset_keeps_the_recorded_one(tmp_path, make_images):
    source, index_dir = tmp_path / "images", tmp_path / "ix"
    make_images(8)
    tiny = load_preset("tiny")
    hnsw = replace(tiny, index=replace(tiny.index, factory="HNSW"))
    build_index(source, index_dir, hnsw, progress=False)
    random_image(np.random.default_rng(3)).save(source / "new.png")
    report = build_index(source, index_dir, progress=False)
    assert report.count == 9 and report.added == 1 and report.factory_change is None
    store = IndexStore.open(index_dir)
    assert (store.manifest.factory, store.manifest.faiss_spec) == ("HNSW", "HNSW32,Flat")
    assert store.manifest.preset == {"name": "tiny", "source": "tiny", "factory": "HNSW"}


# ------------------------------------------------------------------------------ announced factory changes
def test_changing_the_factory_is_announced(tmp_path, make_images, tiny_encoder, caplog):
    source, index_dir = tmp_path / "images", tmp_path / "ix"
    make_images(6)
    Indexer(tiny_encoder, tiny_index_config(factory="HNSW"), progress=False).run(source, index_dir)
    with caplog.at_level(logging.WARNING, logger="viewfinder.pipeline.store.indexer"):
        report = Indexer(tiny_encoder, tiny_index_config(), progress=False).run(source, index_dir)
    assert report.factory_change == "HNSW (HNSW32,Flat) -> Flat"
    assert "index with the factory HNSW" in caplog.text and "HNSW (HNSW32,Flat) -> Flat" in caplog.text
    assert IndexStore.open(index_dir).manifest.faiss_spec == "Flat"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="viewfinder.pipeline.store.indexer"):
        report = Indexer(tiny_encoder, tiny_index_config(factory="Flat"), progress=False).run(source, index_dir)
    assert report.factory_change is None and not caplog.text


def test_cli_prints_a_factory_change(tmp_path, make_images):
    source, index_dir = tmp_path / "images", tmp_path / "ix"
    make_images(6)
    assert invoke("index", source, "--index", index_dir, "-c", "tiny", "--factory", "HNSW").exit_code == 0
    result = invoke("index", source, "--index", index_dir, "-c", "tiny")  # the preset's own factory: Flat
    assert result.exit_code == 0, result.output
    assert "FAISS factory changed HNSW (HNSW32,Flat) -> Flat" in flat(result.output)
    assert json.loads((index_dir / "last_run.json").read_text())["factory_change"] == "HNSW (HNSW32,Flat) -> Flat"
    assert manifest(index_dir)["preset"]["factory"] == "Flat"


# ------------------------------------------------------------------------------ empty index
def test_search_cli_on_an_empty_index_is_exit_2_with_the_fix(tmp_path):
    (tmp_path / "nothing").mkdir()
    built = invoke("index", tmp_path / "nothing", "--index", tmp_path / "ix", "-c", "tiny")
    assert built.exit_code == 0, built.output
    result = invoke("search", "red", "--index", tmp_path / "ix")
    assert result.exit_code == 2, result.output
    message = flat(result.stderr)
    assert "is empty" in message and "viewfinder index" in message and "--index" in message
