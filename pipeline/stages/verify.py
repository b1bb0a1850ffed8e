"""Checking a language model's query before it is used: several candidates, one verdict each.

A query stage with ``n`` > 1 (or a verifier) does not trust one answer. Each candidate query, and
the user's own text as typed (a fallback that is always a candidate, so the stage can never do
worse than "as typed" on the verifier's score), is searched cheaply: the dual encoder takes its
``depth`` nearest items (left-out items excluded) and the matcher's ITC over its cached query
embeddings orders them. Then the ``top`` best of each candidate's hits are scored against the
**user's own words**, and the candidate with the best mean wins:

* ``itm``: the matcher's ITM head scores each hit's image against the words. Its weakness: the
  typed text's own hits were found by those very words, so the matcher, which learnt what the
  encoder learnt, tends to agree with them (measured: it keeps the typed text most of the time);
* ``llm``: the stage's own language model, with its own prompt filled with the user's words, scores
  each hit's description (its text, or a cached caption) as the answer it would write: the mean
  log-probability per token. Where it matters (synonyms, other wordings) the model knows language
  the encoder does not, and it judges real descriptions of the collection's items, not its own
  candidates. A hit without a description falls back to ``itm``. In a feedback
round the marks count too (``marks_weight``): a candidate whose text sits nearer (in the dual
encoder's space) to the items marked relevant than to those marked not relevant gains, which is
what all-negative marks still say: what the rejected hits share is not what the user wants.

The trace lists every candidate, its hits, its scores and why the winner won.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ...adapters.base import itc_scores

if TYPE_CHECKING:
    from ..store.features import EmbedSource, FeatureSource
    from ..store.search import Searcher

Verify = Literal["none", "itm", "llm"]
VERIFY_MODES: tuple[str, ...] = ("none", "itm", "llm")
Judge = Callable[[list[str]], list[float]]
"""Descriptions of hits -> how well each answers the user (higher is better)."""


@dataclass
class Candidate:
    """One query a stage may search with."""

    text: str
    source: str
    """``model`` (beam i), ``typed`` (the user's own words) or ``current`` (the query before this round)."""


class Verifier:
    """Scores candidate queries by what they find (see the module's text)."""

    def __init__(
        self,
        searcher: Searcher,
        features: FeatureSource,
        embeds: EmbedSource,
        *,
        depth: int = 32,
        top: int = 3,
        preselect_weight: float = 3.0,
        marks_weight: float = 1.0,
    ) -> None:
        self.searcher, self.features, self.embeds = searcher, features, embeds
        self.matcher = features.matcher
        self.depth, self.top = depth, top
        self.preselect_weight, self.marks_weight = preselect_weight, marks_weight

    @classmethod
    def from_context(cls, ctx: Any, model: str, **settings: Any) -> Verifier:
        from .rerank import matcher_sources

        features, embeds = matcher_sources(ctx, ctx.model(model, "matcher"))
        return cls(ctx.searcher, features, embeds, **settings)

    def _hits(self, text: str, exclude: set[int]) -> tuple[list[int], np.ndarray]:
        """The candidate's best ``top`` items (preselect, then ITC + preselect) and its text vector."""
        vec, _, _ = self.searcher.encode_query_text(text)
        hits = self.searcher.search_vectors(vec, self.depth + len(exclude))[0]
        hits = [h for h in hits if h.id not in exclude][: self.depth]
        if not hits:
            return [], vec[0]
        embeds = self.embeds.get([(h.id, h.path) for h in hits])
        if not embeds.ids:
            return [h.id for h in hits[: self.top]], vec[0]
        itc = itc_scores(embeds.features, self.matcher.text_embeds([text])[0])
        pre = {h.id: h.score for h in hits}
        score = itc + self.preselect_weight * np.array([pre[i] for i in embeds.ids])
        order = np.argsort(-score, kind="stable")[: self.top]
        return [embeds.ids[j] for j in order], vec[0]

    def choose(
        self,
        words: str,
        candidates: list[Candidate],
        *,
        exclude: set[int] | None = None,
        relevant: list[int] | None = None,
        rejected: list[int] | None = None,
        judge: Judge | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """The index of the best of ``candidates`` for a user who wrote ``words``, and a verdict each.

        ``exclude``: items not to count (left out of the next round); ``relevant`` / ``rejected``:
        the items marked in feedback (their stored vectors weigh in with ``marks_weight``)."""
        start = time.perf_counter()
        exclude = exclude or set()
        found = [self._hits(c.text, exclude) for c in candidates]
        pool = sorted({i for ids, _ in found for i in ids})
        rows = self.searcher.store.items_by_id(pool)
        described = self._descriptions(rows) if judge is not None else {}
        by = "llm" if judge is not None and len(described) == len(pool) else "itm"
        if by == "llm":
            values = dict(zip(pool, judge([described[i] for i in pool]), strict=True))  # type: ignore[misc]
        else:
            batch = self.features.get([(i, rows[i].path) for i in pool if i in rows])
            values = dict(zip(batch.ids, self.matcher.itm(batch.features, words), strict=True)) if batch.ids else {}
        marks = self._marks(relevant or [], rejected or [])
        verdicts = []
        for c, (ids, vec) in zip(candidates, found, strict=True):
            scored = [float(values[i]) for i in ids if i in values]
            match = float(np.mean(scored)) if scored else (-1e9 if by == "llm" else 0.0)
            agree = marks(vec)
            verdicts.append(
                {"text": c.text, "source": c.source, "hits": ids, "by": by, "match": round(match, 4),
                 "marks": None if agree is None else round(agree, 4),
                 "score": round(match + self.marks_weight * (agree or 0.0), 4)}
            )  # fmt: skip
        best = max(range(len(verdicts)), key=lambda j: (verdicts[j]["score"], -j))
        verdicts[best]["chosen"] = True
        verdicts[best]["seconds"] = round(time.perf_counter() - start, 4)
        return best, verdicts

    def _descriptions(self, rows: dict[int, Any]) -> dict[int, str]:
        """Each item's own text, else a cached caption of it."""
        out = {i: r.text for i, r in rows.items() if r.text}
        missing = [i for i in rows if i not in out]
        if missing and self.features.cache is not None:
            out.update(self.features.cache.any_captions(missing))
        return out

    def _marks(self, relevant: list[int], rejected: list[int]) -> Any:
        """vector -> how much nearer it is to the relevant items than to the rejected ones (None: no marks)."""
        store = self.searcher.store
        pos = store.vectors_by_id(relevant) if relevant else None
        neg = store.vectors_by_id(rejected) if rejected else None

        def agree(vec: np.ndarray) -> float | None:
            if pos is None and neg is None:
                return None
            near = float((pos @ vec).mean()) if pos is not None else 0.0
            far = float((neg @ vec).mean()) if neg is not None else 0.0
            return near - far

        return agree


def why(verdicts: list[dict[str, Any]]) -> str:
    """One line for the trace: which candidate won, on what score, against the runner-up."""
    ranked = sorted(verdicts, key=lambda v: -v["score"])
    win = ranked[0]
    if len(ranked) == 1:
        return f"the only candidate ({win['source']})"
    return (
        f"{win['source']} scored {win['score']:.3f} ({win['by']} score of its top hits against the user's words"
        f"{' + marks' if win['marks'] is not None else ''}), {ranked[1]['source']} next at {ranked[1]['score']:.3f}"
    )


__all__ = ["VERIFY_MODES", "Candidate", "Judge", "Verifier", "Verify", "why"]
