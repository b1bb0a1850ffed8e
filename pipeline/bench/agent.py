"""Latency of agent rounds: round 0 and feedback rounds through a preset with LLM stages, per stage.

Each query runs round 0 and ``rounds`` feedback rounds in a :class:`..agent.session.Session`; the
marks are fixed (the first hit relevant, the second not), since this measures time, not quality.
Reported: p50/p95 per round kind and per stage (normalise, rewrite, preselect, rerank, caption),
and the LLM's output tokens per second over its calls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class AgentBench:
    index: str
    preset: str
    queries: int
    rounds: int
    round0_p50_ms: float = 0.0
    feedback_round_p50_ms: float = 0.0
    feedback_round_p95_ms: float = 0.0
    stages_p50_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    """Round kind ("round 0", "feedback") -> stage -> p50 ms."""
    llm_output_tokens_per_s: float | None = None


def bench_agent(index: str | Path, preset: Any, queries: list[str], rounds: int = 2, warmup: int = 1) -> AgentBench:
    from ..agent.session import Session
    from ..stages.runner import Pipeline

    pipeline = Pipeline.from_preset(preset, index=index)
    run = AgentBench(str(index), pipeline.name, len(queries), rounds)
    totals: dict[str, list[float]] = {"round 0": [], "feedback": []}
    stages: dict[str, dict[str, list[float]]] = {"round 0": {}, "feedback": {}}
    tokens, llm_seconds = 0, 0.0
    for i, text in enumerate(queries[:warmup] + queries):
        session = Session(pipeline, k=10, max_rounds=rounds + 1)
        measured = i >= warmup
        start = time.perf_counter()
        result = session.search(text)
        elapsed = [("round 0", time.perf_counter() - start, result)]
        for _ in range(rounds):
            marks = {"relevant": [result.hits[0].id], "irrelevant": [result.hits[1].id]} if len(result.hits) > 1 else {}
            start = time.perf_counter()
            result = session.feedback(**marks)
            elapsed.append(("feedback", time.perf_counter() - start, result))
        if not measured:
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


__all__ = ["AgentBench", "bench_agent"]
