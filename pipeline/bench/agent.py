"""Latency of agent rounds through a preset with LLM stages, per stage, in three modes.

* ``feedback``: round 0 and ``rounds`` feedback rounds in a :class:`..agent.session.Session`; the
  marks are fixed (the first hit relevant, the second not), since this measures time, not quality;
* ``composed``: one composed query per item (the item's image as the reference, a fixed edit);
* ``dialogue``: round 0 and ``rounds`` question-and-answer rounds of a
  :class:`..agent.dialogue.DialogueSession` (grounded questions, rule reformulation; the answer is
  a fixed "yes").

Reported: p50/p95 per round kind and per stage (normalise, compose, rewrite, preselect, rerank,
caption), and the LLM's output tokens per second over its calls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...adapters.entries import ConfigError
from ..store.records import StoreError

MODES = ("feedback", "composed", "dialogue")
EDIT = "make the first object blue"
"""The fixed edit of the composed mode (time does not depend on what it says)."""


@dataclass
class AgentBench:
    index: str
    preset: str
    queries: int
    rounds: int
    mode: str = "feedback"
    round0_p50_ms: float = 0.0
    feedback_round_p50_ms: float = 0.0
    feedback_round_p95_ms: float = 0.0
    stages_p50_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    """Round kind ("round 0", "feedback") -> stage -> p50 ms."""
    llm_output_tokens_per_s: float | None = None


def bench_agent(
    index: str | Path, preset: Any, queries: list[str], rounds: int = 2, warmup: int = 1, mode: str = "feedback"
) -> AgentBench:
    from ..stages.runner import Pipeline

    if mode not in MODES:
        raise ConfigError(f"mode {mode!r}: one of {MODES}")
    pipeline = Pipeline.from_preset(preset, index=index)
    run = AgentBench(str(index), pipeline.name, len(queries), rounds, mode)
    totals: dict[str, list[float]] = {"round 0": [], "feedback": []}
    stages: dict[str, dict[str, list[float]]] = {"round 0": {}, "feedback": {}}
    tokens, llm_seconds = 0, 0.0
    images = _item_images(pipeline, len(queries)) if mode == "composed" else []
    for i, text in enumerate(queries[:warmup] + queries):
        if mode == "composed":
            elapsed = [_timed("round 0", lambda i=i: pipeline.search(image=images[i % len(images)], edit=EDIT))]
        else:
            elapsed = _rounds(pipeline, text, rounds, mode)
        if i < warmup:
            continue
        for kind, seconds, res in elapsed:
            totals[kind].append(seconds)
            for name, s in res.timings.items():
                stages[kind].setdefault(name, []).append(s)
            for step in (res.trace or {}).get("steps", []):
                notes = step.get("notes", {})
                if "tokens" in notes and "seconds" in notes:
                    tokens += int(notes["tokens"].get("output_tokens", 0))
                    llm_seconds += float(notes["seconds"])

    def p(values: list[float], q: float) -> float:
        return 1000 * float(np.percentile(values, q)) if values else 0.0

    run.round0_p50_ms = p(totals["round 0"], 50)
    run.feedback_round_p50_ms = p(totals["feedback"], 50)
    run.feedback_round_p95_ms = p(totals["feedback"], 95)
    run.stages_p50_ms = {kind: {n: p(v, 50) for n, v in per.items()} for kind, per in stages.items()}
    run.llm_output_tokens_per_s = tokens / llm_seconds if llm_seconds > 0 else None
    return run


def _timed(kind: str, call: Any) -> tuple[str, float, Any]:
    start = time.perf_counter()
    result = call()
    return kind, time.perf_counter() - start, result


def _rounds(pipeline: Any, text: str, rounds: int, mode: str) -> list[tuple[str, float, Any]]:
    """Round 0 and ``rounds`` later rounds of one query: feedback marks, or dialogue answers."""
    from ..agent.dialogue import DialogueSession
    from ..agent.session import Session

    if mode == "dialogue":
        dialogue = DialogueSession(pipeline, "grounded", "rule", k=10, max_rounds=rounds + 1)
        out = [_timed("round 0", lambda: dialogue.search(text))]
        for _ in range(rounds):
            out.append(_timed("feedback", lambda: (dialogue.ask(), dialogue.answer("yes"))[1]))
        return out
    session = Session(pipeline, k=10, max_rounds=rounds + 1)
    out = [_timed("round 0", lambda: session.search(text))]
    for _ in range(rounds):
        hits = out[-1][2].hits
        marks = {"relevant": [hits[0].id], "irrelevant": [hits[1].id]} if len(hits) > 1 else {}
        out.append(_timed("feedback", lambda marks=marks: session.feedback(**marks)))
    return out


def _item_images(pipeline: Any, n: int) -> list[str]:
    from itertools import islice

    paths = [row.path for row in islice(pipeline.store.iter_items(), max(1, n + 1))]
    if not paths:
        raise StoreError("the index is empty: no reference images for composed queries")
    return paths


__all__ = ["MODES", "AgentBench", "bench_agent"]
