"""The trace of a query: what each stage saw, did and took, as JSON-ready records.

A trace is the material of prompt experiments and of the web page: per stage and round, the
query text going in and coming out, the candidates with every stage's score, the feedback so
far, the stage's own notes and its time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .state import QueryState

TRACE_CANDIDATES = 128
"""Candidates recorded per step (the top ones); enough for a k=128 rerank."""


@dataclass
class StageRecord:
    """One stage's step."""

    stage: str
    round: int
    seconds: float
    query_in: str | None
    query_out: str | None
    candidates: list[dict[str, Any]]
    """Top candidates after the stage: ``{"id", "key", "score", "scores"}``."""
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trace:
    """Every step of one query through a pipeline."""

    preset: str
    query: str | None
    image: str | None
    steps: list[StageRecord] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)

    def record(self, stage: str, state: QueryState, query_in: str | None, seconds: float) -> None:
        """Append what ``stage`` did to ``state`` (and clear the state's notes)."""
        top = [
            {
                "id": c.id,
                "key": c.key,
                "score": round(c.score, 6),
                "scores": {k: round(v, 6) for k, v in c.scores.items()},
            }
            for c in state.candidates[:TRACE_CANDIDATES]
        ]
        notes = {k: _plain(v) for k, v in state.notes.items()}
        state.notes = {}
        self.steps.append(StageRecord(stage, state.round, seconds, query_in, state.text, top, notes))
        if state.feedback:
            self.feedback = [asdict(f) for f in state.feedback]

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per stage name, summed over rounds."""
        out: dict[str, float] = {}
        for step in self.steps:
            out[step.stage] = out.get(step.stage, 0.0) + step.seconds
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the records already hold plain values, so no deep copy is made."""
        return {
            "preset": self.preset,
            "query": self.query,
            "image": self.image,
            "steps": [dict(vars(step)) for step in self.steps],
            "feedback": self.feedback,
        }


def _plain(value: Any) -> Any:
    """Floats rounded and paths as strings, so notes stay small and JSON-ready."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)
