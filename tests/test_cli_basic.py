"""The ``viewfinder`` command line: help, index + search --json, and user errors (exit 2, no traceback)."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from viewfinder.pipeline.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """Rich wraps long lines and draws tables; compare text with borders dropped and whitespace normalised."""
    return " ".join("".join(" " if "\u2500" <= ch <= "\u257f" else ch for ch in text).split())


def assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    message = flat(result.stderr)
    assert "error:" in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory):
    """A tiny folder indexed through the CLI with ``-c tiny``."""
    from helpers import write_corrupt_files, write_images

    root = tmp_path_factory.mktemp("cli")
    paths = write_images(root / "images", 6, seed=8)
    write_corrupt_files(root / "images")
    result = runner.invoke(
        app,
        ["index", str(root / "images"), "--index", str(root / "index"), "-c", "tiny", "--report", str(root / "r.json")],
    )
    assert result.exit_code == 0, result.output
    return root, paths, result


def test_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "index" in result.stdout and "search" in result.stdout
    for command in ("index", "search"):
        sub = invoke(command, "--help")
        assert sub.exit_code == 0 and "--index" in sub.stdout


def test_no_arguments_shows_help():
    result = invoke()
    assert "index" in result.output and "search" in result.output
    assert "Traceback" not in result.output


def test_index_reports_what_it_did(cli_index):
    root, _, result = cli_index
    out = flat(result.stdout)
    assert "items in index 6" in out and "added 6" in out and "skipped 3" in out
    assert "broken_text.png" in out
    last_run = json.loads((root / "index" / "last_run.json").read_text())
    assert last_run["count"] == 6 and last_run["added"] == 6 and len(last_run["skipped"]) == 3
    assert json.loads((root / "r.json").read_text()) == last_run


def test_search_json_is_parseable(cli_index):
    root, _, _ = cli_index
    result = invoke("search", "a red circle", "--index", root / "index", "-c", "tiny", "--json", "-k", "4")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["query"] == "a red circle" and data["image"] is None and data["truncated"] is False
    assert [h["rank"] for h in data["hits"]] == [1, 2, 3, 4]
    for hit in data["hits"]:
        assert isinstance(hit["id"], int) and isinstance(hit["score"], float)
        assert hit["path"].startswith(str((root / "images").resolve()))
    assert set(data["timings"]) == {"preselect"}
    (step,) = data["trace"]["steps"]
    assert step["stage"] == "preselect" and {"encode", "search", "lookup"} <= set(step["notes"])


def test_search_image_json_without_config_uses_the_manifest_encoder(cli_index):
    root, paths, _ = cli_index
    result = invoke("search", "--image", paths[3], "--index", root / "index", "--json", "-k", "2")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["query"] is None and data["image"] == str(paths[3])
    assert data["hits"][0]["key"] == paths[3].name


def test_search_table_output(cli_index):
    root, paths, _ = cli_index
    result = invoke("search", "--image", paths[0], "--index", root / "index", "-c", "tiny", "-k", "2")
    assert result.exit_code == 0, result.output
    assert paths[0].name in result.stdout and "rank" in result.stdout


def test_second_index_run_is_incremental(cli_index):
    root, _, _ = cli_index
    result = invoke("index", root / "images", "--index", root / "index", "-c", "tiny")
    assert result.exit_code == 0, result.output
    assert "added 0" in flat(result.stdout) and "unchanged 6" in flat(result.stdout)


# ------------------------------------------------------------------------------ user errors
def test_missing_index_is_exit_2(tmp_path):
    assert_user_error(invoke("search", "red", "--index", tmp_path / "nope", "-c", "tiny"), "no viewfinder index")
    assert_user_error(invoke("search", "red", "--index", tmp_path / "nope"), "no viewfinder index")


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_query_is_exit_2(cli_index, query):
    root, _, _ = cli_index
    assert_user_error(invoke("search", query, "--index", root / "index", "-c", "tiny"), "empty")


def test_no_query_at_all_is_exit_2(cli_index):
    root, _, _ = cli_index
    assert_user_error(invoke("search", "--index", root / "index", "-c", "tiny"), "exactly one")


def test_corrupt_query_image_is_exit_2(cli_index, tmp_path):
    root, _, _ = cli_index
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    assert_user_error(invoke("search", "--image", bad, "--index", root / "index", "-c", "tiny"), "not an image")


def test_unknown_preset_is_exit_2(cli_index, tmp_path):
    root, _, _ = cli_index
    assert_user_error(
        invoke("index", root / "images", "--index", tmp_path / "new", "-c", "no-such-preset"),
        "no preset named 'no-such-preset'",
    )
    assert_user_error(invoke("search", "red", "--index", root / "index", "-c", "no-such-preset"), "no-such-preset")
    assert not (tmp_path / "new").exists()


def test_invalid_preset_file_is_exit_2(cli_index, tmp_path):
    root, _, _ = cli_index
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"encoder": "tiny-test", "index": {"factroy": "Flat"}}))
    assert_user_error(invoke("index", root / "images", "--index", tmp_path / "new", "-c", bad), "factroy")


def test_bad_modality_is_exit_2(cli_index, tmp_path):
    root, _, _ = cli_index
    assert_user_error(
        invoke("index", root / "images", "--index", tmp_path / "x", "-c", "tiny", "--modality", "video"), "modality"
    )


def test_missing_source_is_exit_2(tmp_path):
    assert_user_error(invoke("index", tmp_path / "nope", "--index", tmp_path / "x", "-c", "tiny"), "not found")


def test_encoder_mismatch_is_exit_2_with_the_fix(cli_index, tmp_path):
    root, _, _ = cli_index
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"encoder": {"name": "tiny-seed1", "arch": "tiny-test", "seed": 1}}))
    assert_user_error(invoke("search", "red", "--index", root / "index", "-c", other), "tiny-seed1", "--rebuild")
    assert_user_error(invoke("index", root / "images", "--index", root / "index", "-c", other), "--rebuild")


def test_untrainable_factory_is_exit_2(cli_index, tmp_path):
    root, _, _ = cli_index
    assert_user_error(
        invoke("index", root / "images", "--index", tmp_path / "x", "-c", "tiny", "--factory", "IVF4096,Flat"),
        "needs at least",
    )


# ------------------------------------------------------------------------------ help and piped output
COMMANDS_HELP = [
    ("--help",),
    ("index", "--help"),
    ("search", "--help"),
    ("eval", "--help"),
    ("demo", "--help"),
    ("train", "clip", "--help"),
    ("train", "export", "--help"),
    ("bench", "index", "--help"),
    ("bench", "search", "--help"),
    ("scenes", "generate", "--help"),
    ("scenes", "info", "--help"),
]


@pytest.mark.parametrize("args", COMMANDS_HELP, ids=lambda a: " ".join(a))
def test_help_has_no_type_noise(args):
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.stdout and "<str>" not in result.stdout and " range>" not in result.stdout
    assert "Show this message and exit." in flat(result.stdout)


@pytest.mark.parametrize("command", ["index", "search", "eval", "demo"])
def test_config_help_lists_the_packaged_presets(command):
    from viewfinder.adapters.entries import packaged_names

    out = flat(invoke(command, "--help").stdout)
    assert all(name in out for name in packaged_names("presets")), out


def test_piped_search_output_keeps_long_paths_whole(tmp_path):
    from helpers import write_images

    folder = tmp_path / ("a-folder-name-long-enough-to-overflow-eighty-columns-" * 3) / "images"
    paths = write_images(folder, 2, seed=4, prefix="a-long-image-file-name-that-widens-the-path-column-")
    indexed = invoke("index", folder, "--index", tmp_path / "index", "-c", "tiny")
    assert indexed.exit_code == 0, indexed.output
    result = invoke("search", "red", "--index", tmp_path / "index", "-k", "2")
    assert result.exit_code == 0, result.output
    for path in paths:
        assert str(path.resolve()) in result.stdout  # on one line, not wrapped, folded or cut with an ellipsis
    assert "…" not in result.stdout


def test_piped_demo_output_suggests_the_search_command_on_one_line(tmp_path):
    cache = tmp_path / ("a-cache-folder-with-a-name-long-enough-to-wrap-at-eighty-columns-" * 2)
    result = invoke("demo", "-c", "demo-tiny", "--scenes", 60, "--cache", cache)
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("search it:")]
    assert line.split(maxsplit=2)[2] == f"viewfinder search 'a large red star' --index {cache / 'index-demo-tiny'}"
    assert f"contact sheet: {cache / 'contact_sheet.png'}" in result.stdout.splitlines()
