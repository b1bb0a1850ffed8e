"""Why dialogues stop gaining: what the grounded questioner asked and the simulated user answered.

    python reports/scripts/dialogue_answers.py SCENES INDEX OUT.json [--queries 100] [--rounds 5]

Runs ``grounded+rule`` through the ``dialogue`` preset on the test split's partial queries (the
same seeded sample as ``viewfinder eval-dialogue``) and counts, per round, the kind of question
(about a thing, "is there a red star?", a place, "is there something in the top left?", or an open
question) and how the user answered; for the dialogues whose target is not in the top 10 at the
last round, how many of the target's objects the final query names, and how many "is there"
answers were "no" (which add no words to the query; the session demotes the candidates whose
captions name what was rejected), whether the target was among the candidates at all, and which
questions the simulated user could not answer.
"""

from __future__ import annotations

import argparse
import io
import json
from collections import Counter
from pathlib import Path

from viewfinder.pipeline.eval.dialogue import dialogue_report
from viewfinder.pipeline.reports import machine_info, save_report
from viewfinder.pipeline.scenes.dataset import load_scene_dataset
from viewfinder.pipeline.scenes.simuser import UNKNOWN
from viewfinder.pipeline.stages.runner import Pipeline


def kind(question: str) -> str:
    """The grounded questioner's kinds, told apart as the dialogue module itself reads them: a thing
    ("is there a red star?"), a place ("is there something in the top left?"), an open question."""
    from viewfinder.pipeline.agent.dialogue import GENERIC_QUESTIONS, question_phrase

    phrase = question_phrase(question)
    if phrase is not None:
        return f"is there ({phrase.kind})"
    return "open question" if question in GENERIC_QUESTIONS else "other"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenes", type=Path)
    ap.add_argument("index", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    pipeline = Pipeline.from_preset("dialogue", index=args.index)
    traces = io.StringIO()
    report = dialogue_report(args.scenes, "test", pipeline, ["grounded+rule"], n_queries=args.queries,
                             rounds=args.rounds, k=10, progress=False, traces=traces)  # fmt: skip
    scenes = load_scene_dataset(args.scenes).scenes["test"]
    per_round: list[Counter] = [Counter() for _ in range(args.rounds)]
    missed = {"dialogues": 0, "target_among_candidates": 0, "final_query_names_all_objects": 0, "is_there_no": 0,
              "is_there_yes": 0, "target_objects": 0, "objects_named": 0}  # fmt: skip
    unknown: Counter = Counter()
    for line in traces.getvalue().splitlines():
        d = json.loads(line)
        turns = d["session"]["turns"]
        for r, t in enumerate(turns):
            answer = t["answer"].lower()
            short = answer if answer in ("yes", "no", UNKNOWN.lower()) else "a value" if answer else "nothing"
            per_round[r][f"{kind(t['question'])}: {short}"] += 1
            if t["answer"] == UNKNOWN:
                unknown[t["question"]] += 1
        last = d["target_ranks"][-1]
        if last is not None and last <= 10:
            continue
        missed["dialogues"] += 1
        missed["target_among_candidates"] += last is not None
        final = d["session"]["rounds"][-1]["query"].lower()
        target = scenes[d["target"]]
        named = sum(f"{o.colour} {o.shape}" in final for o in target.objects)
        missed["target_objects"] += len(target.objects)
        missed["objects_named"] += named
        missed["final_query_names_all_objects"] += named == len(target.objects)
        for t in turns:
            if kind(t["question"]).startswith("is there"):
                missed["is_there_" + ("yes" if t["answer"].lower().startswith("yes") else "no")] += 1
    out = {
        "command": "python reports/scripts/dialogue_answers.py " + " ".join(map(str, vars(args).values())),
        "hits@10_per_round": [r["hits@10"] for r in report["variants"]["grounded+rule"]["per_round"]],
        "questions_per_round": [dict(c.most_common()) for c in per_round],
        "missed_at_last_round": missed,
        "unanswered_questions": dict(unknown.most_common()),
        "machine": machine_info(),
    }
    save_report(out, args.out)
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
