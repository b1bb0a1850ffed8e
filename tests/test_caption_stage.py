"""The caption stage and ``viewfinder caption``: captions on the top candidates, cached per model and
decoding settings, unreadable images reported (a tiny captioner saved by the test itself)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import write_images
from typer.testing import CliRunner

from viewfinder.adapters.entries import ConfigError
from viewfinder.adapters.qformer_captioner import CaptionerArch, CaptionerHeads, CaptionVocab, save_captioner_dir
from viewfinder.pipeline import Pipeline, build_index
from viewfinder.pipeline.cli import app
from viewfinder.pipeline.stages.presets import load_preset

TINY = CaptionerArch(
    qformer_hidden=32, qformer_layers=1, qformer_heads=2, qformer_intermediate=64, num_query_tokens=4,
    lm_hidden=32, lm_layers=1, lm_heads=2, max_caption_tokens=12, dropout=0.0,
)  # fmt: skip


@pytest.fixture(scope="module")
def collection(tmp_path_factory, tiny_encoder) -> Path:
    root = tmp_path_factory.mktemp("caption")
    torch.manual_seed(0)
    vocab = CaptionVocab.build(["a red circle on the left", "a large blue square at the top"])
    heads = CaptionerHeads(TINY, int(tiny_encoder.model.visual.transformer.width), vocab)
    save_captioner_dir(heads, vocab, root / "captioner", encoder_entry="tiny-test")
    (root / "captioner.yaml").write_text("family: qformer_clip_captioner\nweights: local-dir\npath: captioner\n")
    (root / "preset.yaml").write_text(
        "encoder: tiny-test\nindex: {batch_size: 16, num_workers: 0}\n"
        "stages:\n  - preselect: {k: 10}\n  - caption: {model: captioner.yaml, k: 4, max_new_tokens: 6}\n"
    )
    write_images(root / "images", 12, seed=9)
    build_index(root / "images", root / "index", preset="tiny", progress=False)
    return root


def test_the_top_candidates_get_captions_that_are_cached(collection):
    pipeline = Pipeline.from_preset(str(collection / "preset.yaml"), index=collection / "index")
    first = pipeline.search("a red circle", k=6)
    assert all(isinstance(h.caption, str) for h in first.hits[:4])
    assert all(h.caption is None for h in first.hits[4:])
    notes = first.trace["steps"][1]["notes"]
    assert (notes["captions_computed"], notes["captions_cached"]) == (4, 0)
    assert notes["captions"] == {str(h.id): h.caption for h in first.hits[:4]}
    again = pipeline.search("a red circle", k=6)
    assert (again.trace["steps"][1]["notes"]["captions_cached"]) == 4
    assert [h.caption for h in again.hits] == [h.caption for h in first.hits]  # greedy and cached alike


def test_other_decoding_settings_are_not_served_from_the_cache(collection, tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text(
        (collection / "preset.yaml")
        .read_text()
        .replace("captioner.yaml", str(collection / "captioner.yaml"))
        .replace("max_new_tokens: 6", "max_new_tokens: 3")
    )
    Pipeline.from_preset(str(collection / "preset.yaml"), index=collection / "index").search("a blue square", k=4)
    notes = Pipeline.from_preset(str(preset), index=collection / "index").search("a blue square", k=4).trace
    assert notes["steps"][1]["notes"]["captions_computed"] == 4


@pytest.mark.parametrize(("stage", "message"), [("{k: 0}", "'k' must be >= 1"), ("{beams: 2}", "unknown field")])
def test_bad_caption_settings_are_config_errors(tmp_path, stage, message):
    path = tmp_path / "p.yaml"
    path.write_text(f"encoder: tiny-test\nstages:\n  - preselect\n  - caption: {stage}\n")
    with pytest.raises(ConfigError, match=message):
        load_preset(str(path))


def test_caption_cli_on_an_index_and_on_a_folder_with_a_broken_image(collection, tmp_path):
    runner = CliRunner()
    model = str(collection / "captioner.yaml")
    result = runner.invoke(app, ["caption", str(collection / "index"), "--model", model, "--json", "--limit", "5"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert len(rows) == 5 and all(isinstance(r["caption"], str) for r in rows)
    folder = tmp_path / "imgs"
    shutil.copytree(collection / "images", folder)
    broken = sorted(folder.iterdir())[0]
    broken.write_bytes(b"not an image")
    result = runner.invoke(app, ["caption", str(folder), "--model", model, "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["key"]: r for r in (json.loads(line) for line in result.output.splitlines() if line.startswith("{"))}
    assert len(rows) == 12 and rows[broken.name]["caption"] is None and "error" in rows[broken.name]
    assert all(isinstance(r["caption"], str) for key, r in rows.items() if key != broken.name)
    missing = runner.invoke(app, ["caption", str(folder), "--model", str(tmp_path / "none.yaml")])
    assert missing.exit_code == 2 and "Traceback" not in missing.output


def test_a_captioner_entry_without_weights_says_how_to_train_one(collection, tmp_path):
    entry = tmp_path / "missing.yaml"
    entry.write_text(f"family: qformer_clip_captioner\nweights: local-dir\npath: {tmp_path / 'nowhere'}\n")
    result = CliRunner().invoke(app, ["caption", str(collection / "images"), "--model", str(entry)])
    assert result.exit_code == 2
    assert "viewfinder train captioner" in result.output


def test_eval_reports_caption_f1_beside_the_ground_truth_parse(collection, tmp_path, tiny_encoder):
    from viewfinder.adapters.registry import load_model
    from viewfinder.pipeline.config import IndexConfig
    from viewfinder.pipeline.eval.scenes import evaluate_scene_split
    from viewfinder.pipeline.scenes.dataset import ensure_scene_dataset
    from viewfinder.pipeline.scenes.generator import SceneGeneratorConfig

    root = ensure_scene_dataset(
        tmp_path / "scenes", SceneGeneratorConfig(seed=3), n_train=0, n_val=0, n_test=12, n_compositional=0
    )
    captioner = load_model(str(collection / "captioner.yaml"), "captioner")
    report = evaluate_scene_split(
        root, "test", tiny_encoder, IndexConfig(num_workers=0), tmp_path / "work", captioner=captioner, progress=False
    )
    captions = report["captioning"]
    assert captions["ground_truth_parse"]["f1"] == 1.0
    assert 0.0 <= captions["generated"]["f1"] <= 1.0 and captions["generated"]["n_captions"] >= 12
    assert captions["images_per_second"] > 0


def test_eval_cli_prints_caption_f1(collection, tmp_path):
    from viewfinder.pipeline.scenes.dataset import ensure_scene_dataset
    from viewfinder.pipeline.scenes.generator import SceneGeneratorConfig

    root = ensure_scene_dataset(
        tmp_path / "scenes", SceneGeneratorConfig(seed=4), n_train=0, n_val=0, n_test=8, n_compositional=0
    )
    out = tmp_path / "eval.json"
    args = ["eval", str(root), "--split", "test", "-c", str(collection / "preset.yaml"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--work-dir", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    assert "object F1" in result.output and json.loads(out.read_text())["captioning"]["generated"]["n_captions"] >= 8


def test_captioner_card_quotes_the_eval_report(collection, tmp_path):
    from dataclasses import asdict

    from viewfinder.pipeline.eval.model_card import write_model_card
    from viewfinder.pipeline.train.captioner import CaptionerTrainConfig

    run = tmp_path / "run"
    run.mkdir()
    (run / "train_config.json").write_text(json.dumps(asdict(CaptionerTrainConfig("tiny-captioner", arch=TINY))))
    machine = {"cpu_count": 2, "processor": "x86_64", "platform": "Linux", "torch": "2"}
    summary = {"steps": 3, "train_minutes": 0.1, "machine": machine, "parameters": 1000, "vocab_size": 9}
    (run / "summary.json").write_text(json.dumps(summary))
    captioning = {
        "generated": {"n_captions": 8, "f1": 0.25, "precision": 0.5, "recall": 1 / 6, "shape_accuracy": 0.5},
        "ground_truth_parse": {"f1": 1.0},
        "images_per_second": 100.0,
    }
    report = tmp_path / "eval.json"
    report.write_text(json.dumps({"split": "test", "command": "viewfinder eval X", "machine": machine,
                                  "captioning": captioning}))  # fmt: skip
    card = write_model_card(collection / "captioner", run, [report], "tiny-captioner").read_text()
    assert "| test | 8 | **0.250** | 0.500 | 0.167 | 0.500 |" in card and "`viewfinder eval X`" in card
    (collection / "captioner" / "MODEL_CARD.md").unlink()


def test_index_with_caption_fills_the_caption_cache_that_queries_then_use(collection, tmp_path):
    root = tmp_path / "d"
    for name in ("images", "captioner"):
        shutil.copytree(collection / name, root / name)
    for name in ("captioner.yaml", "preset.yaml"):
        shutil.copy(collection / name, root / name)
    runner = CliRunner()
    args = ["index", str(root / "images"), "--index", str(root / "index"), "-c", str(root / "preset.yaml")]
    result = runner.invoke(app, [*args, "--with", "caption"])
    assert result.exit_code == 0, result.output
    assert "12 computed, 0 already cached, 0 unreadable" in result.output
    again = runner.invoke(app, [*args, "--with", "caption"])
    assert "0 computed, 12 already cached" in again.output
    notes = Pipeline.from_preset(str(root / "preset.yaml"), index=root / "index").search("a red circle", k=6).trace
    assert notes["steps"][1]["notes"]["captions_computed"] == 0  # every caption came from the index-time pass
    wrong = runner.invoke(app, [*args, "--with", "rerank"])
    assert wrong.exit_code == 2 and "no rerank stage" in wrong.output


def test_index_with_caption_on_ray_writes_the_same_captions(collection, tmp_path, local_ray):
    import sqlite3

    def captions(engine):
        root = tmp_path / engine
        for name in ("images", "captioner"):
            shutil.copytree(collection / name, root / name)
        for name in ("captioner.yaml", "preset.yaml"):
            shutil.copy(collection / name, root / name)
        args = ["index", str(root / "images"), "--index", str(root / "index"), "-c", str(root / "preset.yaml")]
        result = CliRunner().invoke(app, [*args, "--with", "caption", "--engine", engine])
        assert result.exit_code == 0, result.output
        assert "12 computed, 0 already cached, 0 unreadable" in result.output
        with sqlite3.connect(root / "index" / "cache.sqlite") as db:
            return dict(db.execute("SELECT item_id, text FROM captions").fetchall())

    assert captions("ray") == captions("local")
