"""What a newcomer tripped on in the command line: interactive marks and the end of the input,
``index --with`` checked before any work, ``caption`` on one image, ``--trace`` saying where it
wrote, ``--index`` required alike by every command that reads an index (and so in the README), and
help that keeps option names whole at 80 columns."""

from __future__ import annotations

import json
import re

import pytest
import typer
from helpers import REPO_ROOT, write_images
from typer.testing import CliRunner

from viewfinder.pipeline.cli import app

runner = CliRunner()


def invoke(*args: object, **kwargs):
    return runner.invoke(app, [str(a) for a in args], prog_name="viewfinder", **kwargs)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """Six images indexed with the tiny preset."""
    root = tmp_path_factory.mktemp("cli-usage")
    write_images(root / "images", 6, seed=3)
    result = invoke("index", root / "images", "--index", root / "index", "-c", "tiny")
    assert result.exit_code == 0, result.output
    return root


# ------------------------------------------------------------------------------ search --interactive
def _interactive(indexed, tmp_path, typed: str):
    trace = tmp_path / "trace.json"
    args = ["search", "red", "-i", indexed / "index", "-c", "tiny", "-k", 3, "--interactive", "--trace", trace]
    return invoke(*args, input=typed), trace


def test_contradictory_marks_ask_again_like_other_bad_marks(indexed, tmp_path):
    result, trace = _interactive(indexed, tmp_path, "+1 -1\n+9\n+1 -2\n\n")
    assert result.exit_code == 0, result.output
    assert "hit 1: marked both relevant (+) and not relevant (-)" in result.stderr
    assert "give hit ranks 1-3" in result.stderr
    rounds = json.loads(trace.read_text())["rounds"]
    assert len(rounds) == 2  # round 0, then the one round the good marks ran


@pytest.mark.parametrize("typed", ["+1", "", "+1\n"], ids=["no-last-newline", "nothing", "last-newline"])
def test_the_end_of_the_input_ends_the_session(indexed, tmp_path, typed):
    result, trace = _interactive(indexed, tmp_path, typed)
    assert result.exit_code == 0, result.output
    assert "Aborted" not in result.output
    assert len(json.loads(trace.read_text())["rounds"]) == (2 if typed else 1)  # "+1" ran before the end
    assert f"trace: {trace}" in result.stderr


def test_parse_marks_refuses_a_hit_marked_both_ways():
    from viewfinder.pipeline.cli.search import BadMarks, parse_marks

    assert parse_marks("+1, -2 3", 3) == ([1, 3], [2])
    with pytest.raises(BadMarks, match="hit 2: marked both"):
        parse_marks("+2 -2", 3)


# ------------------------------------------------------------------------------ --trace, --index
def test_trace_says_where_it_wrote(indexed, tmp_path):
    trace = tmp_path / "trace.json"
    result = invoke("search", "red", "-i", indexed / "index", "-c", "tiny", "--json", "--trace", trace)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["query"] == "red"  # stdout stays pure JSON
    assert result.stderr.strip() == f"trace: {trace}" and json.loads(trace.read_text())["steps"]


@pytest.mark.parametrize("command", [["search", "red"], ["chat", "a star"]])
def test_index_is_required_like_in_every_other_command(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where an `./index` default would have been looked for
    result = invoke(*command)
    assert result.exit_code == 2 and "Missing option '--index' / '-i'" in result.stderr


def test_the_readme_gives_every_search_an_index():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    inline = re.findall(r"`(viewfinder (?:search|chat)\b[^`]*)`", readme)
    in_blocks = re.findall(r"^(viewfinder (?:search|chat)\b.*)$", readme, flags=re.MULTILINE)
    assert inline and in_blocks
    for usage in inline + in_blocks:
        assert re.search(r"(^|\s)(-i|--index)\s", usage), usage


# ------------------------------------------------------------------------------ index --with
@pytest.mark.parametrize(
    ("with_", "message"),
    [("caption", "preset 'tiny' has no caption stage"), ("rerank,colour", "unknown ['colour']")],
)
def test_index_with_is_checked_against_the_preset_before_any_work(indexed, tmp_path, with_, message):
    result = invoke("index", indexed / "images", "--index", tmp_path / "new", "-c", "tiny", "--with", with_)
    assert result.exit_code == 2 and message in result.stderr and "--with" in result.stderr
    assert not (tmp_path / "new").exists()  # nothing embedded, no index made


# ------------------------------------------------------------------------------ caption one image
def test_caption_takes_one_image(tmp_path):
    (image,) = write_images(tmp_path, 1, seed=5)
    result = invoke("caption", image, "--json")
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["key"] == image.name and row["path"] == str(image.resolve()) and row["caption"]


def test_caption_of_a_file_that_is_not_an_image_is_one_line(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    result = invoke("caption", notes)
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.output


# ------------------------------------------------------------------------------ help at 80 columns
def _commands(group: typer.core.TyperGroup, path: tuple[str, ...] = ()):
    ctx = typer.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if hasattr(command, "list_commands"):
            yield (*path, name), command
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


ALL_COMMANDS = list(_commands(typer.main.get_command(app)))


def test_every_command_is_checked():
    names = {" ".join(path) for path, _ in ALL_COMMANDS}
    assert {"index", "search", "caption", "eval-feedback", "prompts experiment", "train genid"} <= names
    assert len(names) > 30


@pytest.mark.parametrize(("path", "command"), ALL_COMMANDS, ids=[" ".join(p) for p, _ in ALL_COMMANDS])
def test_help_at_80_columns_shows_whole_option_names(path, command):
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80  # it was rendered at 80 columns
    assert "…" not in result.stdout
    words = set(re.findall(r"(?<![\w-])-{1,2}[\w][\w-]*", result.stdout))
    for param in command.params:
        for name in (*param.opts, *param.secondary_opts):
            if name.startswith("-"):
                assert name in words, (name, result.stdout)
