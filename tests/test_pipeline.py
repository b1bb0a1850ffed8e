"""The stage seam: presets list stages, a Pipeline runs them over one state, and a trace records it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import REPO_ROOT, CountingEncoder
from typer.testing import CliRunner

from viewfinder.adapters.entries import ConfigError, packaged_names
from viewfinder.adapters.registry import families, load_entry, load_model, register_family
from viewfinder.pipeline import Pipeline, QueryState, build_index, open_index
from viewfinder.pipeline.cli import app
from viewfinder.pipeline.stages import STAGE_TYPES, Preselect, PreselectConfig, Trace, register_stage
from viewfinder.pipeline.stages.presets import load_preset
from viewfinder.pipeline.stages.registry import parse_stages
from viewfinder.pipeline.store.search import QueryError

runner = CliRunner()


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    """An index of 24 small images built with the ``tiny`` preset."""
    from helpers import write_images

    root = tmp_path_factory.mktemp("pipeline")
    write_images(root / "images", 24, seed=3)
    build_index(root / "images", root / "index", preset="tiny", progress=False)
    return root


def _preset_file(folder: Path, body: str, name: str = "preset.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(body)
    return path


# ----------------------------------------------------------------------------------------- presets
def test_a_preset_without_stages_preselects_only():
    preset = load_preset("tiny")
    assert [s.name for s in preset.stages] == ["preselect"]
    assert preset.stages[0].config == PreselectConfig()


def test_stages_with_settings_are_parsed_into_their_typed_config(tmp_path):
    path = _preset_file(tmp_path, "encoder: tiny-test\nstages:\n  - preselect: {k: 20}\n")
    preset = load_preset(str(path))
    assert [(s.name, s.config) for s in preset.stages] == [("preselect", PreselectConfig(k=20))]
    assert preset.source == str(path.resolve())


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ("[{rerankk: {k: 5}}]", "unknown stage 'rerankk'; known stages: ["),
        ("[{preselect: {kk: 5}}]", "unknown field(s) ['kk']"),
        ("[{preselect: {k: 0}}]", "'k' must be >= 1"),
        ("[{preselect: {k: five}}]", "field 'k' must be of type"),
        ("[{preselect: {k: 5}, other: {}}]", "one-key mapping"),
        ("[]", "non-empty list"),
        ("preselect", "non-empty list"),
    ],
)
def test_bad_stage_configs_are_errors_that_name_what_exists(tmp_path, stages, message):
    path = _preset_file(tmp_path, f"encoder: tiny-test\nstages: {stages}\n")
    with pytest.raises(ConfigError) as info:
        load_preset(str(path))
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_the_first_stage_must_produce_candidates():
    @dataclass
    class NoConfig:
        pass

    register_stage("_noop", NoConfig, lambda config, ctx: None, role="candidates")  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(ConfigError, match="first stage must produce candidates"):
            parse_stages(["_noop", "preselect"], "p.yaml")
    finally:
        del STAGE_TYPES["_noop"]


def test_a_preset_file_resolves_its_relative_paths_from_its_own_folder(tmp_path, monkeypatch):
    folder = tmp_path / "presets"
    _preset_file(folder, "family: open_clip\narch: tiny-test\nweights: random\nseed: 7\n", "my-model.yaml")
    path = _preset_file(folder, "encoder: my-model.yaml\n")
    monkeypatch.chdir(tmp_path)  # not the preset's folder
    preset = load_preset(str(path))
    assert preset.encoder.name == "my-model" and preset.encoder.seed == 7


# ---------------------------------------------------------------------------------------- pipeline
def test_pipeline_gives_the_same_hits_as_the_searcher(indexed):
    pipeline = Pipeline.from_preset("tiny", index=indexed / "index")
    searcher = open_index(indexed / "index", "tiny")
    for query in ("a red square", "blue sky"):
        got = pipeline.search(query, k=5)
        want = searcher.search(query, k=5)
        assert [(h.id, h.key) for h in got.hits] == [(h.id, h.key) for h in want.hits]
        assert [h.score for h in got.hits] == pytest.approx([h.score for h in want.hits], abs=1e-6)
        assert all(h.scores == {"preselect": pytest.approx(h.score)} for h in got.hits)
        assert got.query == want.query


def test_pipeline_without_a_preset_uses_the_one_the_index_was_built_with(indexed):
    pipeline = Pipeline.from_preset(index=indexed / "index")
    assert pipeline.name == "tiny"
    assert [s.name for s in pipeline.stages] == ["preselect"]


def test_image_queries_run_through_the_pipeline(indexed):
    query_image = sorted((indexed / "images").iterdir())[4]
    result = Pipeline.from_preset("tiny", index=indexed / "index").search(image=query_image, k=3)
    assert result.image == str(query_image) and result.query is None
    assert result.hits[0].path == str(query_image.resolve())  # an image is its own nearest neighbour


def test_the_trace_records_each_stage_and_is_json(indexed, tmp_path):
    path = _preset_file(tmp_path, "encoder: tiny-test\nstages:\n  - preselect: {k: 12}\n")
    result = Pipeline.from_preset(str(path), index=indexed / "index").search("  a   green circle ", k=4)
    trace = json.loads(json.dumps(result.trace))
    (step,) = trace["steps"]
    assert step["stage"] == "preselect" and step["round"] == 0
    assert step["query_in"] == "  a   green circle " and step["query_out"] == "a green circle"
    assert step["notes"]["k"] == 12 and len(step["candidates"]) == 12  # preselect took k, hits are 4
    assert len(result.hits) == 4
    assert [c["id"] for c in step["candidates"][:4]] == [h.id for h in result.hits]
    assert set(result.timings) == {"preselect"} and step["seconds"] == result.timings["preselect"]


class _Reverse:
    """A test stage: scores each candidate by minus its preselect score (so the order flips)."""

    name = "reverse"

    def run(self, state: QueryState) -> QueryState:
        for c in state.candidates:
            c.scores[self.name] = -c.scores["preselect"]
        state.rank_by(self.name)
        state.notes["flipped"] = len(state.candidates)
        return state


def test_stages_compose_in_the_order_a_preset_names(indexed, tmp_path):
    @dataclass
    class ReverseConfig:
        pass

    register_stage("reverse", ReverseConfig, lambda config, ctx: _Reverse(), role="candidates")
    try:
        path = _preset_file(tmp_path, "encoder: tiny-test\nstages:\n  - preselect: {k: 6}\n  - reverse\n")
        result = Pipeline.from_preset(str(path), index=indexed / "index").search("a red square", k=6)
    finally:
        del STAGE_TYPES["reverse"]
    plain = Pipeline.from_preset("tiny", index=indexed / "index").search("a red square", k=6)
    assert [h.id for h in result.hits] == [h.id for h in reversed(plain.hits)]
    assert all(set(h.scores) == {"preselect", "reverse"} for h in result.hits)
    assert [s["stage"] for s in result.trace["steps"]] == ["preselect", "reverse"]
    assert result.trace["steps"][1]["notes"] == {"flipped": 6}


def test_a_pipeline_takes_stage_objects_directly(indexed, tiny_encoder):
    from viewfinder.pipeline.store.index_store import IndexStore
    from viewfinder.pipeline.store.search import Searcher

    store = IndexStore.open(indexed / "index")
    counting = CountingEncoder(tiny_encoder)
    pipeline = Pipeline([Preselect(Searcher(store, counting), PreselectConfig(k=8)), _Reverse()], store)
    state = pipeline.run(QueryState(query="x", text="x", k=3), Trace("direct", "x", None))
    assert counting.texts_encoded == 1 and len(state.candidates) == 8
    assert state.candidates[0].score >= state.candidates[-1].score


@pytest.mark.parametrize("bad", [{}, {"text": "a", "image": "b.png"}])
def test_a_query_needs_exactly_one_of_text_or_image(indexed, bad):
    pipeline = Pipeline.from_preset("tiny", index=indexed / "index")
    with pytest.raises(QueryError, match="exactly one"):
        pipeline.search(**bad)


def test_search_cli_writes_the_trace(indexed, tmp_path):
    out = tmp_path / "trace.json"
    result = runner.invoke(app, ["search", "a red square", "--index", str(indexed / "index"), "--trace", str(out)])
    assert result.exit_code == 0, result.output
    trace = json.loads(out.read_text())
    assert trace["preset"] == "tiny" and trace["steps"][0]["stage"] == "preselect"


# ---------------------------------------------------------------------------------------- registry
def test_unknown_model_family_names_the_registered_ones():
    with pytest.raises(ConfigError, match=r"unknown model family 'nope'; registered: \[.*'open_clip'"):
        load_entry({"name": "x", "family": "nope"})


def test_a_new_family_registers_without_touching_the_loader(tmp_path):
    @dataclass
    class FakeEntry:
        name: str
        family: str = "fake"
        size: int = 1

    register_family("fake", kind="matcher", entry_type=FakeEntry, loader="tests_fake_family:load")
    module = tmp_path / "tests_fake_family.py"
    module.write_text("def load(entry):\n    return ('loaded', entry.name, entry.size)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        assert "fake" in families("matcher") and "fake" not in families("encoder")
        assert load_model({"name": "m", "family": "fake", "size": 3}) == ("loaded", "m", 3)
        with pytest.raises(ConfigError, match="unknown encoder family 'fake'"):
            load_model({"name": "m", "family": "fake"}, "encoder")
        with pytest.raises(ConfigError, match="unknown field"):
            load_entry({"name": "m", "family": "fake", "colour": 1})
    finally:
        sys.path.remove(str(tmp_path))
        from viewfinder.adapters import registry

        del registry._FAMILIES["fake"]


def test_adapters_never_import_the_pipeline():
    code = (
        "import sys\n"
        "import viewfinder.adapters.registry, viewfinder.adapters.open_clip_encoder, viewfinder.adapters.entries\n"
        "print(sorted(m for m in sys.modules if m.startswith('viewfinder.pipeline')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
    imports = re.compile(r"^\s*(from|import)\s+\S*pipeline", re.M)
    for source in (REPO_ROOT / "adapters").glob("*.py"):
        assert not imports.search(source.read_text()), source


@pytest.mark.parametrize("name", packaged_names("presets"))
def test_every_packaged_preset_parses(name):
    preset = load_preset(name)
    first = next(s.name for s in preset.stages if STAGE_TYPES[s.name].role != "query")  # query stages may lead
    assert first == "preselect" and preset.source == name
