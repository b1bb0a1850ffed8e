"""Every command fails the same way on a user's mistake: one ``error: ...`` line with the fix, exit 2,
no traceback, whether the preset does not exist or its model cannot be loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from viewfinder.pipeline.cli import app

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> None:
    """Exit 2, no traceback, and stderr holding exactly one ``error:`` line naming every fragment."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Images, a tiny index over them, a caption manifest, and a preset whose weights file is missing."""
    from helpers import write_images

    root = tmp_path_factory.mktemp("cli-errors")
    paths = write_images(root / "images", 3, seed=2)
    result = runner.invoke(app, ["index", str(root / "images"), "--index", str(root / "index"), "-c", "tiny"])
    assert result.exit_code == 0, result.output
    with (root / "captions.jsonl").open("w") as fh:
        for i, path in enumerate(paths):
            fh.write(json.dumps({"path": str(path), "caption": f"picture {i}"}) + "\n")
    missing = root / "weights" / "missing.safetensors"
    entry = {"name": "gone", "arch": "tiny-test", "weights": "file", "path": str(missing)}
    (root / "model.yaml").write_text(yaml.safe_dump(entry))
    (root / "preset.yaml").write_text(yaml.safe_dump({"encoder": entry, "index": {"factory": "Flat"}}))
    return root, missing


def _preset_commands(root: Path, preset: object) -> dict[str, list[object]]:
    return {
        "index": ["index", root / "images", "--index", root / "new-index", "-c", preset],
        "search": ["search", "red", "--index", root / "index", "-c", preset],
        "eval": ["eval", root / "captions.jsonl", "-c", preset, "--work-dir", root / "eval", "--out", root / "r.json"],
        "demo": ["demo", "-c", preset, "--scenes", 2, "--cache", root / "demo"],
    }


@pytest.mark.parametrize("command", ["index", "search", "eval", "demo"])
def test_missing_preset_is_one_clean_line(workspace, command):
    root, _ = workspace
    result = invoke(*_preset_commands(root, "no-such-preset")[command])
    assert_one_line_error(result, "no preset named 'no-such-preset'", "default")  # and the packaged ones


@pytest.mark.parametrize("command", ["index", "search", "eval", "demo"])
def test_missing_weights_file_is_one_clean_line(workspace, command):
    root, missing = workspace
    result = invoke(*_preset_commands(root, root / "preset.yaml")[command])
    assert_one_line_error(result, "checkpoint file not found", str(missing), "fix 'path'")
    assert not (root / "new-index").exists()


def test_bench_index_with_a_missing_model_is_one_clean_line(workspace):
    root, missing = workspace
    assert_one_line_error(invoke("bench", "index", "--model", "no-such-model", "--n", 1), "no model named")
    result = invoke("bench", "index", "--model", root / "model.yaml", "--n", 1)
    assert_one_line_error(result, "checkpoint file not found", str(missing))


def test_bench_search_with_an_untrainable_factory_is_one_clean_line():
    result = invoke("bench", "search", "--dim", 8, "--sizes", 50, "--queries", 2, "--factories", "IVF4096,Flat")
    assert_one_line_error(result, "needs at least 4096 vectors")


def test_train_with_a_missing_config_or_architecture_is_one_clean_line(tmp_path):
    assert_one_line_error(invoke("train", "clip", "-c", tmp_path / "nope.yaml"), "config file not found")
    missing_arch = tmp_path / "arch" / "missing.json"
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"name": "t", "arch": str(missing_arch), "out": str(tmp_path / "run")}))
    assert_one_line_error(invoke("train", "clip", "-c", config), "architecture config not found", str(missing_arch))
    assert not (tmp_path / "run").exists()


def test_train_export_of_a_folder_that_is_not_a_run_is_one_clean_line(tmp_path):
    result = invoke("train", "export", tmp_path, "--to", tmp_path / "zoo")
    assert_one_line_error(result, "not a finished training run", "viewfinder train clip")
    assert not (tmp_path / "zoo").exists()


def test_scenes_info_of_a_folder_that_is_not_a_benchmark_is_one_clean_line(tmp_path):
    assert_one_line_error(invoke("scenes", "info", tmp_path), "not a scene benchmark", "scenes generate")
    (tmp_path / "scenes.json").write_text("{}")
    assert_one_line_error(invoke("scenes", "info", tmp_path), "not a scene benchmark")


def test_eval_of_a_missing_dataset_is_one_clean_line(tmp_path):
    result = invoke("eval", tmp_path / "nope.jsonl", "-c", "tiny", "--work-dir", tmp_path / "w")
    assert_one_line_error(result, "not found", "Karpathy")
