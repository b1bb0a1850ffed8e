"""A search over several rounds: search, mark hits relevant or not, search again with a rewritten query.

The session keeps one :class:`~..stages.state.QueryState` across rounds, so the ``rewrite`` stage of
round n reads the marks on round n-1's candidates (and their captions) and writes the query that
round n searches with. Marks come from a person (Python, the CLI, later a web page) or from the
scene benchmark's simulated user, through :meth:`Session.feedback`, by item id or key.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..stages.runner import Pipeline
from ..stages.state import Feedback, QueryState
from ..store.search import QueryError, SearchResult


class Session:
    """Rounds of one query through a pipeline (use a preset with ``rewrite`` and ``caption`` stages)."""

    def __init__(self, pipeline: Pipeline, *, k: int = 10, max_rounds: int = 10) -> None:
        if k < 1 or max_rounds < 1:
            raise ValueError("k and max_rounds must be >= 1")
        self.pipeline = pipeline
        self.k = k
        self.max_rounds = max_rounds
        self.state: QueryState | None = None
        self.results: list[SearchResult] = []

    @property
    def round(self) -> int:
        return self.state.round if self.state is not None else -1

    def search(
        self, text: str | None = None, *, image: str | Path | None = None, edit: str | None = None
    ) -> SearchResult:
        """Round 0: a new query (this forgets earlier rounds): a text, an image, or a composed query (a
        reference ``image`` and an ``edit`` in words, for a preset with a ``compose`` stage)."""
        self.state = self.pipeline.query_state(text, image=image, edit=edit, k=self.k)
        self.results = [self.pipeline.run_round(self.state)]
        return self.results[-1]

    def feedback(
        self, relevant: Iterable[int | str] = (), irrelevant: Iterable[int | str] = (), text: str | None = None
    ) -> SearchResult:
        """Mark hits of the last round (item ids or keys) and run the next round."""
        if self.state is None:
            raise QueryError("search first: there is no round to give feedback on")
        if self.state.round + 1 >= self.max_rounds:
            raise QueryError(f"this session stops after {self.max_rounds} rounds")
        ids = {c.key: c.id for c in self.state.candidates}
        known = {c.id for c in self.state.candidates}

        def resolve(items: Iterable[int | str]) -> list[int]:
            out = []
            for item in items:
                item_id = ids.get(item) if isinstance(item, str) else item
                if item_id is None or item_id not in known:
                    raise QueryError(f"{item!r} is not among the last round's candidates")
                out.append(item_id)
            return out

        marks = Feedback(self.state.round, resolve(relevant), resolve(irrelevant), text)
        if set(marks.relevant) & set(marks.irrelevant):
            raise QueryError("an item cannot be marked both relevant and not relevant")
        self.state.feedback.append(marks)
        self.state.round += 1
        self.results.append(self.pipeline.run_round(self.state))
        return self.results[-1]

    def stable(self, n: int | None = None) -> bool:
        """Whether the last round's top ``n`` (default k) hits equal the round before's."""
        if len(self.results) < 2:
            return False
        n = n or self.k
        last, before = ([h.id for h in r.hits[:n]] for r in self.results[-2:][::-1])
        return last == before

    @property
    def trace(self) -> dict[str, Any]:
        """Every round's query, hits and stage trace, and the feedback given."""
        feedback = [vars(f) for f in self.state.feedback] if self.state else []
        rounds = [
            {"round": i, "query": r.query, "hits": [h.id for h in r.hits], "trace": r.trace}
            for i, r in enumerate(self.results)
        ]
        return {"pipeline": self.pipeline.name, "rounds": rounds, "feedback": feedback}


__all__ = ["Session"]
