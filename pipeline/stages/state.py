"""The one object every stage takes and returns: the query, its candidates and what happened so far."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Candidate:
    """One item of the collection under consideration, with the score each stage gave it."""

    id: int
    key: str
    path: str
    text: str | None = None
    """The item's own text (manifest caption, or the text of a text index)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    """Stage name -> the score that stage gave (``preselect``: cosine similarity, ...)."""
    score: float = 0.0
    """The score the candidate list is ordered by now (the last ranking stage's)."""
    caption: str | None = None
    """A generated description (the caption stage's), if any."""


@dataclass
class Feedback:
    """What a person or a simulated user said about one round's candidates."""

    round: int
    relevant: list[int] = field(default_factory=list)
    """Item ids marked relevant."""
    irrelevant: list[int] = field(default_factory=list)
    """Item ids marked not relevant."""
    text: str | None = None
    """A free-text remark or an answer to a question."""


@dataclass
class QueryState:
    """Shared state of one query as it flows through the stages of a pipeline."""

    query: str | None
    """The text as the user gave it (None for an image-only query)."""
    image: str | None = None
    """Path of the query (or reference) image, if any."""
    text: str | None = None
    """The current query text: the user's, cleaned, and later a stage's rewrite."""
    edit: str | None = None
    """For a composed query: the edit to apply to the reference image."""
    k: int = 10
    """Hits the caller wants back."""
    candidates: list[Candidate] = field(default_factory=list)
    """Ordered best first."""
    feedback: list[Feedback] = field(default_factory=list)
    round: int = 0
    truncated: bool = False
    """The query text was longer than the encoder's context and was cut to fit."""
    notes: dict[str, Any] = field(default_factory=dict)
    """What the running stage wants recorded in the trace (moved there after each stage)."""

    def rank_by(self, stage: str) -> None:
        """Order candidates by the score ``stage`` gave them, best first; that score becomes ``score``."""
        for c in self.candidates:
            c.score = c.scores[stage]
        self.candidates.sort(key=lambda c: c.score, reverse=True)
