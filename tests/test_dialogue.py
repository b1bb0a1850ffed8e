"""Dialogue search on the scene benchmark: questions grounded in the hits' captions, answers by the
simulated user or a person, reformulation, the eval's figures (a real tiny index; fake chat models).
The agent's generality (another domain's captions, the answer reader) is in test_dialogue_general."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_scene_index, write_fake_chat
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from viewfinder.pipeline import Pipeline
from viewfinder.pipeline.agent.dialogue import (
    DialogueSession,
    Turn,
    best_log_rank_integral,
    check_question,
    concatenate,
    grounded_question,
    rule_reformulation,
)
from viewfinder.pipeline.llm.prompts import load_prompt
from viewfinder.pipeline.scenes.dataset import load_scene_dataset
from viewfinder.pipeline.scenes.simuser import UNKNOWN, SimulatedUser
from viewfinder.pipeline.store.search import QueryError


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dialogue")
    tiny_scene_index(root, seed=8, n_test=16)
    return root


def test_grounded_questions_on_scene_captions_split_them_and_the_rule_reads_the_answers():
    captions = ["a red star and a blue circle on the left", "a red star", "a green square", "a blue circle"]
    question = grounded_question("a star", captions, [])
    assert question == "is there a blue circle?"  # half the captions name it; "star" was said
    turns = [Turn(question, "yes", "grounded")]
    nxt = grounded_question("a star", captions, turns)
    assert nxt not in {question, "is there a circle?"}  # "circle" is said now
    assert rule_reformulation("a star", turns) == "a star and a blue circle"
    turns.append(Turn("is there a red star?", "yes, at the top", "grounded"))
    assert rule_reformulation("a star", turns) == "a red star at the top and a blue circle"


def test_the_simulated_user_answers_the_general_questions():
    from viewfinder.pipeline.scenes.graph import Scene, SceneObject

    objects = [SceneObject("star", "red", "large", 0.2, 0.2), SceneObject("circle", "blue", "small", 0.8, 0.8)]
    user = SimulatedUser(Scene("t", "brown", objects))
    answers = {
        "is there a large red star?": "yes",
        "is there a blue star?": "no",
        "are there circles?": "yes",
        "is there something in the top left?": "yes",
        "is there something on the left?": "no",
        "is there something on a brown background?": "yes",
        "is there a black backdrop?": "no",
        "is there a grey background?": "no",
        "is there a purple background?": "no",
        "is there a wooden background?": UNKNOWN,
        "is there a background?": "yes",
        "is there something above a small blue circle?": "yes",
        "is there something below a large red star?": "yes",
        "is there a wooden chair?": UNKNOWN,
        "what else can you tell me about it?": (
            "a large red star in the top left and a small blue circle in the bottom right"
        ),
        "what is the main thing in the picture?": "a large red star in the top left",
    }
    assert {q: user.answer(q) for q in answers} == answers


def test_questions_are_checked_and_answers_reformulated():
    assert check_question("is it red?", []) == ("is it red?", None)
    assert check_question("", [])[1] == "empty" and check_question("tell me", [])[1] == "not a question"
    assert check_question("Is it red?", ["is it red"])[1] == "already asked"
    assert "longer" in check_question("is " + "x" * 200 + "?", [])[1]
    turns = [
        Turn("is there a red star?", "yes", "grounded"),
        Turn("is there something in the top left?", "yes", "grounded"),
        Turn("is there a blue circle?", "no", "grounded"),
        Turn("what colour is the heart?", "green", "llm"),
    ]
    assert rule_reformulation("a heart", turns) == "a heart and a red star in the top left, green"
    assert concatenate("a star", turns[:1]) == "a star, is there a red star? yes"
    listed = "there are several: a small red star at the top and a large blue star"
    several = [Turn("what colour is the star?", listed, "llm")]
    assert rule_reformulation("a star", several) == "a small red star at the top and a large blue star"


def test_bri_is_zero_when_the_target_leads_and_rewards_finding_it_sooner():
    assert best_log_rank_integral(np.ones((3, 4))) == 0.0
    early = best_log_rank_integral(np.array([[50, 1, 1, 1]]))
    late = best_log_rank_integral(np.array([[50, 50, 50, 1]]))
    assert 0 < early < late <= math.log(50)
    assert best_log_rank_integral(np.array([[5, 9, 9, 9]])) == pytest.approx(math.log(5))  # the best so far counts


def test_a_dialogue_with_the_simulated_user_runs_rounds_and_keeps_a_trace(scenes):
    pipeline = Pipeline.from_preset("tiny", index=scenes / "index")
    target = next(iter(load_scene_dataset(scenes / "scenes").scenes["test"].values()))
    user = SimulatedUser(target)
    session = DialogueSession(pipeline, "grounded", "rule", k=5, max_rounds=4)
    with pytest.raises(QueryError, match="search first"):
        session.ask()
    session.search("a shape")
    with pytest.raises(QueryError, match="call ask"):
        session.answer("yes")
    for _ in range(3):
        question = session.ask()
        answer = user.answer(question)
        assert answer != UNKNOWN, question  # the simulated user reads every general question
        session.answer(answer)
    with pytest.raises(QueryError, match="stops after 4 rounds"):
        session.ask()
    trace = session.trace
    assert len(trace["turns"]) == 3 and len(trace["rounds"]) == 4
    assert len({t["question"] for t in trace["turns"]}) == 3  # never the same question twice
    assert trace["rounds"][0]["query"] == "a shape" and session.candidate_keys()
    session.search("a shape")  # a new dialogue
    session.ask()
    with pytest.raises(QueryError, match="answer is empty"):
        session.answer("  ")


def test_a_model_questioner_is_checked_and_falls_back_and_a_model_reformulates(scenes):
    pipeline = Pipeline.from_preset("tiny", index=scenes / "index")
    asker = FakeListChatModel(responses=["is there a red star?", "not a question at all", "is there a red star?"])
    writer = FakeListChatModel(responses=["a red star in the top left"])
    session = DialogueSession(
        pipeline,
        (asker, load_prompt("dialogue-question")),
        (writer, load_prompt("dialogue-reformulate")),
        k=5,
    )
    session.search("a star")
    assert session.ask() == "is there a red star?" and session.notes[-1]["source"] == "llm"
    assert session.answer("yes").query == "a red star in the top left"
    fallback = session.ask()  # the model's answer is no question: the grounded questioner asks
    assert fallback != "is there a red star?" and session.notes[-1]["source"] == "llm-fallback"
    session.answer("no")
    session.ask()  # the model repeats itself: refused, "already asked"
    assert session.notes[-1]["problem"] == "already asked"


def test_dialogue_eval_reports_each_variant_on_the_same_queries(scenes):
    from viewfinder.pipeline.eval.dialogue import dialogue_report

    pipeline = Pipeline.from_preset("tiny", index=scenes / "index")
    variants = ["random+concat", "grounded+concat", "grounded+rule"]
    report = dialogue_report(scenes / "scenes", "test", pipeline, variants, n_queries=3, rounds=2, k=5, progress=False)
    assert list(report["variants"]) == variants and report["n_queries"] == 3
    firsts = {v: e["per_round"][0]["hits@5"] for v, e in report["variants"].items()}
    assert len(set(firsts.values())) == 1  # one round 0 for all
    for entry in report["variants"].values():
        found = [r["found@5"] for r in entry["per_round"]]
        assert found == sorted(found) and entry["bri"] >= 0 and 0 <= entry["unanswered_rate"] <= 1
    import io

    traces = io.StringIO()
    dialogue_report(scenes / "scenes", "test", pipeline, ["grounded+rule"], n_queries=2, rounds=2, k=5,
                    progress=False, traces=traces)  # fmt: skip
    lines = [json.loads(line) for line in traces.getvalue().splitlines()]
    assert len(lines) == 2 and all(len(line["session"]["turns"]) == 2 for line in lines)  # the trace, not its method
    assert all(turn["question"] and turn["answer"] for line in lines for turn in line["session"]["turns"])
    fake = scenes / "asker.yaml"
    write_fake_chat(fake, "tell me")
    asked = dialogue_report(scenes / "scenes", "test", pipeline, [f"{fake}=dialogue-question+rule"], n_queries=2,
                            rounds=2, k=5, progress=False)  # fmt: skip
    assert next(iter(asked["variants"].values()))["refused_question_rate"] == 1.0  # "tell me" is no question
    with pytest.raises(ValueError, match="QUESTIONER\\+REFORMULATOR"):
        dialogue_report(scenes / "scenes", "test", pipeline, ["llm"], n_queries=1, rounds=1, progress=False)


def test_chat_asks_in_the_terminal_and_writes_the_trace(scenes, tmp_path):
    import json

    from typer.testing import CliRunner

    from viewfinder.pipeline.cli import app

    out = tmp_path / "chat.json"
    args = ["chat", "a shape", "-i", str(scenes / "index"), "-c", "tiny", "-k", "3", "--trace", str(out)]
    result = CliRunner().invoke(app, args, input="yes\nin the top left\nI don't know\n\n")
    assert result.exit_code == 0, result.output
    assert "round 0: 'a shape'" in result.output and "Q: " in result.output
    assert '(that answer changed nothing: "I don\'t know" says nothing about the picture)' in result.output
    trace = json.loads(out.read_text())
    assert [t["answer"] for t in trace["turns"]] == ["yes", "in the top left", "I don't know"]
    assert len(trace["rounds"]) == 4 and trace["rounds"][3]["query"] == trace["rounds"][2]["query"]
    bad = CliRunner().invoke(app, ["chat", "  ", "-i", str(scenes / "index"), "-c", "tiny"])
    assert bad.exit_code != 0 and "first description is empty" in bad.output


def test_bench_agent_times_dialogue_rounds(scenes, tmp_path):
    import json

    from typer.testing import CliRunner

    from viewfinder.pipeline.cli import app

    out = tmp_path / "bench.json"
    args = ["bench", "agent", "-i", str(scenes / "index"), "-c", "tiny", "--mode", "dialogue", "--queries", "2"]
    result = CliRunner().invoke(app, [*args, "--rounds", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    run = json.loads(out.read_text())
    assert run["mode"] == "dialogue" and run["feedback_round_p50_ms"] > 0
    bad = CliRunner().invoke(app, ["bench", "agent", "-i", str(scenes / "index"), "-c", "tiny", "--mode", "x"])
    assert bad.exit_code != 0 and "mode 'x'" in bad.output


def test_prompt_experiment_covers_dialogue_mode_with_a_plot_and_traces(scenes, tmp_path):
    import json

    from typer.testing import CliRunner

    from viewfinder.pipeline.cli import app

    out = tmp_path / "exp"
    args = ["prompts", "experiment", str(scenes / "scenes"), "-i", str(scenes / "index"), "--split", "test",
            "--mode", "dialogue", "-c", "tiny", "--queries", "2", "--rounds", "2", "--out-dir", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "dialogue" and list(report["variants"]) == ["random+concat", "grounded+concat",
                                                                         "grounded+rule"]  # fmt: skip
    assert (out / "rounds.png").stat().st_size > 0
    lines = [json.loads(line) for line in (out / "traces.jsonl").read_text().splitlines()]
    assert len(lines) == 3 * 2 and len(lines[0]["session"]["turns"]) == 2
    bad = CliRunner().invoke(app, [*args[:7], "--mode", "chat"])
    assert bad.exit_code != 0 and "feedback, dialogue or composed" in bad.output


def test_eval_on_a_scene_folder_adds_dialogue_figures_beside_the_baselines(scenes, tmp_path):
    import json

    from typer.testing import CliRunner

    from viewfinder.pipeline.cli import app

    out = tmp_path / "eval.json"
    args = ["eval", str(scenes / "scenes"), "--split", "test", "-c", "tiny", "--agent", "--dialogue-queries", "2",
            "--dialogue-rounds", "2", "--work-dir", str(tmp_path / "work"), "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    dialogue = report["agent"]["dialogue"]
    assert list(dialogue["variants"]) == ["random+concat", "grounded+concat", "grounded+rule"]
    assert dialogue["rounds"] == 2 and len(dialogue["variants"]["grounded+rule"]["per_round"]) == 3
    assert "composed" not in report["agent"]  # the tiny preset has no compose stage
    assert "BRI" in result.output and "text → image" in result.output
    plain = CliRunner().invoke(app, [*args[:6], "--work-dir", str(tmp_path / "work"), "--out", str(out)])
    assert plain.exit_code == 0 and "agent" not in json.loads(out.read_text())  # off for a preset with no LLM


def test_the_agent_knows_no_vocabulary_of_its_own(scenes):
    """Every part runs with no collection's words: a refused question falls back to the grounded
    questioner, a refused reformulation to the rule, and with no phrase left an open question."""
    from viewfinder.pipeline.agent.dialogue import GENERIC_QUESTIONS

    pipeline = Pipeline.from_preset("tiny", index=scenes / "index")
    asker = FakeListChatModel(responses=["not a question"])
    writer = FakeListChatModel(responses=[""])
    session = DialogueSession(
        pipeline, (asker, load_prompt("dialogue-question")), (writer, load_prompt("dialogue-reformulate")), k=5
    )
    session.search("a star")
    question = session.ask()
    assert session.notes[-1]["source"] == "llm-fallback" and question.startswith("is there")
    assert session.answer("yes").query == rule_reformulation("a star", session.turns)
    assert grounded_question("a star", ["a star", "a star"], []) is None  # nothing left to ask about
    bare = DialogueSession(pipeline, "grounded", "rule", k=5)
    bare.search("a star")
    bare.state.candidates[:] = []  # no captions: an open question
    assert bare.ask() == GENERIC_QUESTIONS[0] and bare.notes[-1]["source"] == "generic"
