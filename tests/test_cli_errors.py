"""Every command fails the same way on a user's mistake: one ``error: ...`` line with the fix, exit 2,
no traceback, whether the preset does not exist or its model cannot be loaded."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from viewfinder import Error
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


# ------------------------------------------------------------------------------ the one error path itself
class _FixableError(Error, ValueError):
    """A user-facing error of the kind the library raises."""


def _probe_app():
    """A command line with commands that fail in each way a real one can, built like ``viewfinder``."""
    import errno
    import logging

    from viewfinder.pipeline.cli.common import APP_SETTINGS, ViewfinderTyper, setup_logging

    probe = ViewfinderTyper(**APP_SETTINGS)

    @probe.callback()
    def _main() -> None:
        setup_logging(False)

    @probe.command("user-error")
    def user_error() -> None:
        raise _FixableError("the widget is missing: make one")

    @probe.command("os-error")
    def os_error(path: str = "out/x.json") -> None:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    @probe.command("value-bug")
    def value_bug() -> None:
        raise ValueError("a bug in our code")

    @probe.command("type-bug")
    def type_bug() -> None:
        len(3)  # type: ignore[arg-type]

    @probe.command("logged-then-raised")
    def logged_then_raised() -> None:
        logging.error("could not reach the hub")  # what open_clip does (on the root logger) before it raises
        raise _FixableError("could not load the model: could not reach the hub")

    @probe.command("hinted")
    def hinted(index: str = "my index") -> None:
        raise _FixableError("this model was trained for another index")

    return probe


def test_an_error_subclass_is_one_line_and_exit_2():
    result = runner.invoke(_probe_app(), ["user-error"])
    assert_one_line_error(result, "error: the widget is missing: make one")


def test_an_os_error_is_one_line_with_the_file_and_exit_2():
    result = runner.invoke(_probe_app(), ["os-error", "--path", "/root/report.json"])
    assert_one_line_error(result, "error: Permission denied: /root/report.json")


@pytest.mark.parametrize(("command", "kind"), [("value-bug", ValueError), ("type-bug", TypeError)])
def test_a_bug_keeps_its_traceback(command, kind):
    result = runner.invoke(_probe_app(), [command])
    assert isinstance(result.exception, kind) and result.exit_code == 1  # CliRunner holds the traceback
    assert "error:" not in result.output


def test_a_bug_prints_its_traceback_from_the_console_script(tmp_path):
    """The console script's own entry point: a bug in a command (a plain ValueError, here from a
    monkey-patched search) ends with Python's traceback, a user error with one line."""
    import subprocess
    import sys

    run = "import sys, viewfinder.pipeline.cli as cli\nsys.argv = ['viewfinder', *sys.argv[1:]]\ncli.main()\n"
    patch = (
        "import viewfinder.pipeline.stages.runner as runner\n"
        "def broken(*args, **kwargs): raise ValueError('a bug in our code')\n"
        "runner.Pipeline.from_preset = broken\n"
    )
    args = ["search", "red", "-i", str(tmp_path)]
    bug = subprocess.run([sys.executable, "-c", patch + run, *args], capture_output=True, text=True, timeout=120)
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "ValueError: a bug in our code" in bug.stderr
    assert "error:" not in bug.stderr
    user = subprocess.run([sys.executable, "-c", run, *args], capture_output=True, text=True, timeout=120)
    assert user.returncode == 2 and "Traceback" not in user.stderr, user.stderr
    (line,) = user.stderr.strip().splitlines()
    assert line.startswith(f"error: no viewfinder index at {tmp_path}")


def test_verbose_shows_where_a_user_error_was_raised(tmp_path):
    result = runner.invoke(app, ["-v", "search", "red", "--index", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "Traceback" in result.stderr and "IndexMissingError" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: no viewfinder index at")


def test_a_message_logged_before_the_error_is_not_printed_twice():
    result = runner.invoke(_probe_app(), ["logged-then-raised"])
    assert_one_line_error(result, "could not reach the hub")


def test_the_cli_adds_its_flag_hint_to_a_library_message(monkeypatch):
    from viewfinder.pipeline.cli import common

    hints = [(_FixableError, "hinted", "train one with `viewfinder train genid --index {index} -c {config}`")]
    monkeypatch.setattr(common, "flag_hints", lambda: hints)
    result = runner.invoke(_probe_app(), ["hinted"])
    assert_one_line_error(
        result, "error: this model was trained for another index; train one with "
        "`viewfinder train genid --index 'my index' -c CONFIG`",  # a parameter the command lacks: its name
    )  # fmt: skip
    other = runner.invoke(_probe_app(), ["user-error"])  # the hint is for `hinted` alone
    assert_one_line_error(other, "error: the widget is missing: make one")
    assert ";" not in other.stderr


def test_a_genid_model_folder_that_is_not_one_gets_the_train_hint(workspace, tmp_path):
    root, _ = workspace
    result = invoke("bench", "genid", "--index", root / "index", "--model", tmp_path, "--queries", 1)
    assert_one_line_error(
        result, f"{tmp_path} is not a generative-identifier model",
        f"; train one with `viewfinder train genid --index {root / 'index'} -c CONFIG`",
    )  # fmt: skip


def test_every_hint_names_an_error_class_and_formats():
    from viewfinder.pipeline.cli.common import flag_hints

    for error, command, hint in flag_hints():
        assert issubclass(error, Error) and (command is None or not command.startswith("viewfinder"))
        assert "--" in hint and "`viewfinder " in hint  # a hint is about flags; the library says the rest
        hint.format_map(collections.defaultdict(str))


def test_a_missing_run_file_is_an_os_error_line(tmp_path):
    """A file the command reads itself (``train card``'s run config) missing: one line naming it."""
    result = invoke("train", "card", tmp_path / "zoo", "--run", tmp_path, "--report", tmp_path / "r.json")
    assert_one_line_error(result, "No such file or directory", str(tmp_path / "train_config.json"))


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["search", "red"], ["Missing option '--index'", "(see `viewfinder search --help`)"]),
        (["nosuch"], ["No such command 'nosuch'"]),
        (["bench", "index", "--image-size", "big"], ["--image-size", "WIDTHxHEIGHT", "viewfinder bench index --help"]),
        (["search", "red", "-i", "x", "-k", "0"], ["Invalid value for '-k'", "greater than or equal to 1"]),
    ],
)
def test_usage_errors_are_one_line_too(args, fragments):
    assert_one_line_error(runner.invoke(app, args, prog_name="viewfinder"), *fragments)


def test_the_library_says_what_to_do_and_the_cli_adds_the_flags(tmp_path):
    """A missing index: the library's message names no flag; the CLI's hint gives the command to run."""
    from viewfinder import Error
    from viewfinder.pipeline.store.index_store import IndexStore

    with pytest.raises(Error) as caught:
        IndexStore.open(tmp_path / "nope")
    assert " --" not in str(caught.value) and "`viewfinder" not in str(caught.value)
    result = runner.invoke(app, ["search", "red", "--index", str(tmp_path / "nope")])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert (
        line.startswith("error: no viewfinder index at")
        and f"viewfinder index SOURCE --index {tmp_path / 'nope'}" in line
    )
