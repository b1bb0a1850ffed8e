"""Feedback rounds: a session over a real (tiny) index, the rewrite stage with a fake chat model,
marks by a person (ids, keys) or by the scene benchmark's simulated user."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import tiny_scene_index, write_fake_chat

from viewfinder.pipeline import Pipeline
from viewfinder.pipeline.agent.session import Session
from viewfinder.pipeline.eval.simulate import simulate
from viewfinder.pipeline.scenes.dataset import load_scene_dataset
from viewfinder.pipeline.store.search import QueryError

REWRITTEN = "a large red star at the top"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("session")
    tiny_scene_index(root, seed=5, n_test=14)
    write_fake_chat(root / "llm.yaml", REWRITTEN)
    (root / "agent.yaml").write_text(
        "encoder: tiny-test\nindex: {num_workers: 0}\nstages:\n  - rewrite: {model: llm.yaml}\n  - preselect: {k: 14}\n"
    )
    return root


def _session(root: Path, k: int = 5) -> Session:
    return Session(Pipeline.from_preset(str(root / "agent.yaml"), index=root / "index"), k=k)


def test_feedback_rewrites_the_query_from_the_marked_hits(scenes):
    session = _session(scenes)
    first = session.search("a star")
    assert first.query == "a star" and session.round == 0
    assert first.trace["steps"][0]["notes"]["skipped"].startswith("no feedback")
    liked, disliked = first.hits[0], first.hits[1]
    second = session.feedback(relevant=[liked.key], irrelevant=[disliked.id])
    assert session.round == 1 and second.query == REWRITTEN
    notes = second.trace["steps"][0]["notes"]
    assert notes["fallback"] is False and notes["feedback_round"] == 0
    sent = notes["messages"][-1]["content"]
    assert json.dumps([liked.text]) in sent and json.dumps([disliked.text]) in sent  # their captions, quoted
    trace = session.trace
    assert [r["query"] for r in trace["rounds"]] == ["a star", REWRITTEN]
    assert trace["feedback"][0]["relevant"] == [liked.id]


def test_feedback_needs_a_round_and_known_hits(scenes):
    session = _session(scenes)
    with pytest.raises(QueryError, match="search first"):
        session.feedback(relevant=[1])
    first = session.search("a star")
    with pytest.raises(QueryError, match="not among the last round"):
        session.feedback(relevant=["no-such-key"])
    with pytest.raises(QueryError, match="both relevant and not relevant"):
        session.feedback(relevant=[first.hits[0].id], irrelevant=[first.hits[0].id])


def test_the_simulated_user_drives_rounds_and_the_target_rank_is_kept(scenes):
    dataset = load_scene_dataset(scenes / "scenes")
    by_id = dataset.scenes["test"]  # scene id -> scene
    target = by_id[sorted(by_id)[3]]
    run = simulate(_session(scenes, k=14), "a shape", target, by_id, rounds=2)
    assert len(run.target_ranks) == 3 and run.queries[0] == "a shape" and run.queries[1] == REWRITTEN
    assert all(r is not None and 1 <= r <= 14 for r in run.target_ranks)  # k covers the whole index
    assert _session(scenes).stable() is False


def test_the_pipeline_is_a_langchain_retriever_and_runnable(scenes):
    from langchain_core.runnables import RunnableLambda

    pipeline = Pipeline.from_preset("tiny", index=scenes / "index")
    retriever = pipeline.as_retriever(k=3)
    docs = retriever.invoke("a red star")
    expected = pipeline.search("a red star", k=3)
    assert [d.metadata["id"] for d in docs] == [h.id for h in expected.hits]
    assert docs[0].page_content == expected.hits[0].text and docs[0].metadata["rank"] == 1
    assert set(docs[0].metadata["scores"]) == {"preselect"}
    chain = RunnableLambda(str.lower) | retriever | RunnableLambda(lambda ds: [d.metadata["key"] for d in ds])
    assert chain.invoke("A RED STAR") == [h.key for h in expected.hits]
    assert len(retriever.batch(["a red star", "a blue circle"])) == 2


def test_interactive_search_runs_rounds_from_typed_marks(scenes, tmp_path):
    from typer.testing import CliRunner

    from viewfinder.pipeline.cli import app
    from viewfinder.pipeline.cli.search import parse_marks

    assert parse_marks("+1 +3 -2", 5) == ([1, 3], [2]) and parse_marks("4", 5) == ([4], [])
    with pytest.raises(ValueError, match="give hit ranks 1-5"):
        parse_marks("+9", 5)
    args = ["search", "a star", "--index", str(scenes / "index"), "-c", str(scenes / "agent.yaml"), "-k", "4"]
    out = tmp_path / "trace.json"
    result = CliRunner().invoke(
        app, [*args, "--interactive", "--rounds", "2", "--trace", str(out)], input="+1 -2\nx9\n\n"
    )
    assert result.exit_code == 0, result.output
    assert "round 0: 'a star'" in result.output and f"round 1: '{REWRITTEN}'" in result.output
    assert "give hit ranks" in result.output  # a bad mark is explained, then asked again
    trace = json.loads(out.read_text())
    assert [r["query"] for r in trace["rounds"]] == ["a star", REWRITTEN] and len(trace["feedback"]) == 1


def test_prompt_experiment_runs_every_variant_on_the_same_queries(scenes):
    from viewfinder.pipeline.eval.experiment import build_variants, partial_queries, run_experiment

    queries, by_id = partial_queries(scenes / "scenes", "test", 4)
    specs = ["none", "rule", "rocchio", f"{scenes / 'llm.yaml'}=rewrite-feedback+rocchio"]
    variants = build_variants(specs, scenes / "index", captioner=None, preselect_k=14)
    traces = scenes / "traces.jsonl"
    report = run_experiment(variants, queries, by_id, rounds=2, k=5, traces_path=traces, progress=False)
    assert list(report["variants"]) == specs and report["n_queries"] == len(queries) >= 1
    assert len(report["variants"]["none"]["per_round"]) == 3
    firsts = {name: v["per_round"][0] for name, v in report["variants"].items()}
    assert len({(r["hits@1"], r["hits@5"], r["median_rank"]) for r in firsts.values()}) == 1  # one round 0
    for entry in report["variants"].values():
        found = [r["found@5"] for r in entry["per_round"]]
        assert found == sorted(found) and all(r["found@5"] >= r["hits@5"] for r in entry["per_round"])
    llm = report["variants"][specs[-1]]
    assert llm["stages"] == ["rewrite", "preselect"] and llm["per_round"][0]["llm_calls"] == 0
    assert llm["per_round"][1]["llm_calls"] == len(queries) and llm["per_round"][1]["invalid_rate"] == 0.0
    lines = [json.loads(line) for line in traces.read_text().splitlines()]
    assert len(lines) == len(specs) * len(queries)
    rounds = lines[-1]["session"]["rounds"]
    assert [r["query"] for r in rounds] == [lines[-1]["query"], REWRITTEN, REWRITTEN]


def test_rejected_hits_are_not_shown_again_and_rocchio_moves_the_query(scenes):
    from viewfinder.pipeline.eval.experiment import build_variants

    variants = build_variants(["none", "rocchio"], scenes / "index", captioner=None, preselect_k=14)
    for name, pipeline in variants.items():
        session = Session(pipeline, k=5)
        first = session.search("a star")
        rejected = [h.id for h in first.hits[1:3]]
        second = session.feedback(relevant=[first.hits[0].id], irrelevant=rejected)
        assert not set(rejected) & {h.id for h in second.hits}
        notes = second.trace["steps"][0]["notes"]
        assert notes["left_out_rejected"] == 2 and ("rocchio" in notes) == (name == "rocchio")
    with pytest.raises(ValueError, match="only add-on"):
        build_variants(["none+magic"], scenes / "index", captioner=None)


def test_the_demo_agent_part_normalises_and_runs_feedback_rounds(scenes):
    from viewfinder.adapters.registry import load_encoder
    from viewfinder.pipeline.demo.agent import run_agent_demo

    demo = run_agent_demo(
        scenes / "scenes", scenes / "index", load_encoder("tiny-test"), k=4, rounds=2, preset=scenes / "agent.yaml"
    )
    assert demo.preset == "agent" and demo.request and demo.partial_query
    assert [r.query for r in demo.rounds] == [demo.partial_query, REWRITTEN, REWRITTEN]
    assert demo.rounds[0].relevant + demo.rounds[0].irrelevant == 4  # every shown hit is marked
    assert all(r.target_rank is None or 1 <= r.target_rank <= 14 for r in demo.rounds)
    # the example is the first of a seeded sample, whose per-round figure it is one case of
    assert len(demo.sample_ranks) == min(6, demo.pool) and demo.sample_ranks[0] == [r.target_rank for r in demo.rounds]
    assert demo.seed == 0 and demo.k == 4 and demo.pool >= 2 and len(demo.found_per_round()) == 3
    again = run_agent_demo(
        scenes / "scenes", scenes / "index", load_encoder("tiny-test"), k=4, rounds=2, preset=scenes / "agent.yaml"
    )
    assert again.partial_query == demo.partial_query and again.sample_ranks == demo.sample_ranks  # drawn, not picked


def test_bench_agent_times_round_zero_and_feedback_rounds_per_stage(scenes, tmp_path):
    from typer.testing import CliRunner

    from viewfinder.pipeline.cli import app

    out = tmp_path / "bench.json"
    args = ["bench", "agent", "--index", str(scenes / "index"), "-c", str(scenes / "agent.yaml"), "--queries", "2"]
    result = CliRunner().invoke(app, [*args, "--rounds", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    run = json.loads(out.read_text())
    assert run["queries"] == 2 and run["rounds"] == 1 and run["feedback_round_p50_ms"] > 0
    assert set(run["stages_p50_ms"]["feedback"]) == {"rewrite", "preselect"}


class _FakeCaptioner:
    """An ImageCaptioner that says the same thing of every image (the protocol, nothing more)."""

    name = "fake-captioner"
    fingerprint = "fake-captioner-v1"

    @property
    def image_transform(self):
        import torchvision.transforms as T

        return T.Compose([T.Resize((8, 8)), T.ToTensor()])

    def caption(self, pixels, **decoding):
        return ["a large red star at the top"] * len(pixels)


def _compose_pipeline(scenes: Path, responses: list[str], weight: float = 0.5) -> Pipeline:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from viewfinder.adapters.registry import load_encoder
    from viewfinder.pipeline.llm.prompts import load_prompt
    from viewfinder.pipeline.stages.compose import Compose
    from viewfinder.pipeline.stages.preselect import Preselect, PreselectConfig
    from viewfinder.pipeline.store.index_store import IndexStore
    from viewfinder.pipeline.store.search import Searcher

    store = IndexStore.open(scenes / "index")
    searcher = Searcher(store, load_encoder("tiny-test"))
    compose = Compose(FakeListChatModel(responses=responses), load_prompt("compose-edit"), _FakeCaptioner())
    return Pipeline([compose, Preselect(searcher, PreselectConfig(k=5, reference_weight=weight))], store)


def test_a_composed_query_applies_the_edit_to_the_reference_caption(scenes):
    reference = next((scenes / "scenes" / "images" / "test").glob("*.png"))
    session = Session(_compose_pipeline(scenes, ["a large blue star at the top"]), k=5)
    result = session.search(image=reference, edit="make the star blue")
    assert result.query == "a large blue star at the top"
    notes = result.trace["steps"][0]["notes"]
    assert notes["reference_caption"] == "a large red star at the top" and notes["fallback"] is False
    sent = notes["messages"][-1]["content"]
    assert '"a large red star at the top"' in sent and '"make the star blue"' in sent  # quoted data
    assert result.trace["steps"][1]["notes"]["reference_weight"] == 0.5  # fused with the reference image
    refused = Session(_compose_pipeline(scenes, ["<|im_start|>system"]), k=5).search(image=reference, edit="x")
    assert refused.query == "a large red star at the top; x"  # the fallback, marked
    assert refused.trace["steps"][0]["notes"]["fallback"] is True


def test_composed_query_bad_input_is_a_clear_error(scenes, tmp_path):
    reference = next((scenes / "scenes" / "images" / "test").glob("*.png"))
    session = Session(_compose_pipeline(scenes, ["a star"]), k=5)
    with pytest.raises(QueryError, match="the edit is empty"):
        session.search(image=reference, edit="   ")
    with pytest.raises(QueryError, match="characters long"):
        session.search(image=reference, edit="x" * 600)
    with pytest.raises(QueryError, match="needs the reference image"):
        session.search("a star", edit="make it blue")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(QueryError, match="cannot be used"):
        session.search(image=broken, edit="make it blue")
    with pytest.raises(QueryError, match="no compose stage"):
        _session(scenes).search(image=reference, edit="make it blue")


def test_search_cli_refuses_an_edit_without_a_reference_image_or_compose_stage(scenes):
    from typer.testing import CliRunner

    from viewfinder.pipeline.cli import app

    reference = next((scenes / "scenes" / "images" / "test").glob("*.png"))
    base = ["search", "--index", str(scenes / "index"), "-c", str(scenes / "agent.yaml")]
    no_image = CliRunner().invoke(app, [*base[:1], "a star", *base[1:], "--edit", "make it blue"])
    assert no_image.exit_code != 0 and "needs the reference image" in no_image.output
    no_stage = CliRunner().invoke(app, [*base, "--image", str(reference), "--edit", "make it blue"])
    assert no_stage.exit_code != 0 and "no compose stage" in no_stage.output


def test_composed_eval_counts_the_edited_target_never_the_reference(scenes, tmp_path):
    from viewfinder.pipeline.eval.composed import composed_report

    data = tiny_scene_index(tmp_path, seed=6, n_test=12)
    target_text = next(q.target_text for q in load_scene_dataset(data).queries["test"] if q.type == "composed")
    pipeline = _compose_pipeline(tmp_path, [target_text], weight=0.0)
    report = composed_report(data, "test", pipeline, n_queries=2, depth=5, progress=False)
    assert report["n_queries"] == 2 and report["stages"] == ["compose", "preselect"]
    assert 0.0 <= report["R@1"] <= report["R@5"] <= report["R@10"] <= 1.0
    assert report["examples"][0]["query"] == target_text and report["fallback_rate"] == 0.0


def test_the_model_free_compose_baseline_joins_caption_and_edit(scenes):
    from viewfinder.adapters.registry import load_encoder
    from viewfinder.pipeline.stages.compose import Compose
    from viewfinder.pipeline.stages.preselect import Preselect, PreselectConfig
    from viewfinder.pipeline.store.index_store import IndexStore
    from viewfinder.pipeline.store.search import Searcher

    reference = next((scenes / "scenes" / "images" / "test").glob("*.png"))
    store = IndexStore.open(scenes / "index")
    searcher = Searcher(store, load_encoder("tiny-test"))
    pipeline = Pipeline([Compose(None, None, _FakeCaptioner()), Preselect(searcher, PreselectConfig(k=5))], store)
    result = Session(pipeline, k=5).search(image=reference, edit="make the star blue")
    assert result.query == "a large red star at the top; make the star blue"
    assert result.trace["steps"][0]["notes"]["fallback"] is False


def test_composed_variants_set_the_compose_model_and_the_reference_weight():
    from viewfinder.pipeline.eval.composed import composed_variant_preset
    from viewfinder.pipeline.stages.presets import load_preset

    agent = load_preset("agent")

    def settings(spec: str) -> tuple[str, str, float]:
        stages = {s.name: s.config for s in composed_variant_preset(agent, spec).stages}
        return stages["compose"].model, stages["compose"].prompt, stages["preselect"].reference_weight

    original = {s.name: s.config for s in agent.stages}
    assert settings("preset") == (original["compose"].model, original["compose"].prompt,
                                  original["preselect"].reference_weight)  # fmt: skip
    assert settings("concat+ref:0")[::2] == ("none", 0.0)
    assert settings("my-llm=my-prompt+ref:1.5") == ("my-llm", "my-prompt", 1.5)
    for bad in ("my-llm", "=p", "concat+rocchio", "concat+ref:-1", "concat+ref:x"):
        with pytest.raises(ValueError, match="variant"):
            composed_variant_preset(agent, bad)
    with pytest.raises(ValueError, match="no compose stage"):
        composed_variant_preset(load_preset("dialogue"), "concat")
