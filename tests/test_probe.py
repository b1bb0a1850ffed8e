"""The shape probe (``pipeline/eval/probe.py``, ``viewfinder eval-probe``): the report's structure on
tiny ViT and ModifiedResNet encoders over a few dozen scenes and a few steps, seeded reruns, the
command and the wrapper script that writes it, and clean errors."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT
from typer.testing import CliRunner

from viewfinder.adapters.entries import ConfigError
from viewfinder.pipeline.cli import app
from viewfinder.pipeline.eval.probe import ProbeSettings, probe_report, read_scene_shapes
from viewfinder.pipeline.scenes.dataset import SceneDataError

RN_ENTRY = {"name": "tiny-test-rn", "arch": "tiny-test-rn", "weights": "random", "seed": 0}
SMALL = {"n_train": 24, "n_eval": 12, "steps": 3, "batch_size": 8}
SCORES = {"micro_f1", "macro_f1", "exact_set_accuracy", "per_shape_f1", "final_loss", "seconds"}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    from viewfinder.pipeline.scenes.dataset import ensure_scene_dataset
    from viewfinder.pipeline.scenes.generator import SceneGeneratorConfig

    root = tmp_path_factory.mktemp("probe") / "scenes"
    return ensure_scene_dataset(root, SceneGeneratorConfig(seed=3), n_train=36, n_val=0, n_test=0, n_compositional=0)


def _f1s(report: dict) -> dict:
    return {
        (enc, layer): (r["micro_f1"], r["macro_f1"], r["exact_set_accuracy"], r["final_loss"])
        for enc, block in report["encoders"].items()
        for layer, r in block["layers"].items()
    }


def test_the_shape_labels_come_from_the_benchmark(scenes) -> None:
    data = read_scene_shapes(scenes, "train", 36)
    info = json.loads((scenes / "scenes.json").read_text())
    assert data.shapes == info["vocabulary"]["shapes"] and data.labels.shape == (36, len(data.shapes))
    first = json.loads((scenes / "train.jsonl").read_text().splitlines()[0])
    held = {data.shapes[i] for i in data.labels[0].nonzero().flatten().tolist()}
    assert held == {obj["shape"] for obj in first["scene"]["objects"]} and data.paths[0] == scenes / first["path"]


def test_report_on_a_vit_and_a_resnet(scenes) -> None:
    report = probe_report(scenes, ["tiny-test", RN_ENTRY], ProbeSettings(**SMALL), progress=False)
    assert set(report) >= {"what", "probe", "scenes", "shapes", "settings", "encoders", "machine"}
    assert report["settings"]["n_train"] == 24 and report["machine"]["torch"]
    vit, rn = report["encoders"]["tiny-test"], report["encoders"]["tiny-test-rn"]

    assert vit["tower"] == "vit" and vit["image_size"] == [32, 32] and vit["fingerprint"]
    assert list(vit["layers"]) == ["stem", "block1", "qformer"]
    for r in vit["layers"].values():
        assert SCORES <= set(r) and 0 <= r["micro_f1"] <= 1 and 0 <= r["macro_f1"] <= 1
        assert (r["tokens"], r["grid"], r["width"], r["extra_tokens"]) == (17, [4, 4], 32, 1)
        assert set(r["per_shape_f1"]) == set(report["shapes"])
    assert vit["qformer_micro_f1"] == vit["layers"]["qformer"]["micro_f1"]

    assert rn["tower"] == "resnet" and rn["qformer_reads"] == "layer2"
    assert list(rn["layers"]) == ["stem", "layer1", "layer2", "layer3", "layer4"]  # qformer is layer2: once
    assert (rn["layers"]["layer2"]["tokens"], rn["layers"]["layer2"]["grid"]) == (64, [8, 8])
    assert (rn["layers"]["stem"]["tokens"], rn["layers"]["stem"]["width"]) == (256, 4)
    assert rn["qformer_micro_f1"] == rn["layers"]["layer2"]["micro_f1"]

    assert SCORES <= set(vit["pixel_cnn"]) and vit["pixel_cnn"]["input"] == [3, 32, 32]
    assert rn["pixel_cnn"]["input"] == [3, 64, 64]  # other pixels: its own reference


def test_a_seed_gives_the_same_figures(scenes) -> None:
    settings = ProbeSettings(**SMALL, pixel_cnn=False)
    runs = [probe_report(scenes, [RN_ENTRY], settings, layers=["qformer", "last"], progress=False) for _ in range(2)]
    assert _f1s(runs[0]) == _f1s(runs[1])
    block = runs[0]["encoders"]["tiny-test-rn"]
    assert list(block["layers"]) == ["qformer", "last"] and block["layers"]["qformer"]["layer"] == "layer2"
    assert "pixel_cnn" not in block


def test_the_command_writes_the_report(scenes, tmp_path) -> None:
    out = tmp_path / "probe.json"
    args = ["eval-probe", str(scenes), "-m", "tiny-test", "-l", "qformer,stem", "--train", "24", "--eval", "12",
            "--steps", "2", "--batch-size", "8", "--no-pixel-cnn", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert list(report["encoders"]["tiny-test"]["layers"]) == ["qformer", "stem"]
    assert report["command"].startswith("viewfinder") and report["settings"]["steps"] == 2
    assert "qformer *" in result.stdout and "micro F1" in result.stdout


def test_the_wrapper_script_runs_the_command_on_the_shipped_encoder(scenes, tmp_path, monkeypatch) -> None:
    out = tmp_path / "scene-clip.json"
    script = REPO_ROOT / "reports" / "scripts" / "probe_vision_shapes.py"
    options = ["-l", "qformer", "--train", "24", "--eval", "12", "--steps", "1", "--batch-size", "4", "--no-pixel-cnn"]
    monkeypatch.setattr(sys, "argv", [str(script), str(scenes), str(out), *options])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(script), run_name="__main__")
    assert stop.value.code == 0
    block = json.loads(out.read_text())["encoders"]["scene-clip"]
    assert block["layers"]["qformer"]["tokens"] == 64 and block["qformer_reads"] == "layer2"  # the 8 x 8 conv grid


def test_mistakes_are_clean_errors(scenes) -> None:
    result = CliRunner().invoke(
        app, ["eval-probe", str(scenes), "-m", "tiny-test", "-l", "layer2", "--train", "24", "--eval", "12"]
    )
    assert result.exit_code == 2 and "'layer2' is not in this VisionTransformer tower" in result.output
    assert "Traceback" not in result.output
    with pytest.raises(SceneDataError, match="has 36 scenes; the probe needs 5000"):
        probe_report(scenes, ["tiny-test"])
    with pytest.raises(ConfigError, match="'steps' must be >= 1"):
        ProbeSettings(steps=0)
