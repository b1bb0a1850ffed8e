"""Preselect: embed the query with the dual encoder and take the nearest items from the FAISS index.

In a feedback round (a session's round n) it also reads the marks of every earlier round:

* ``exclude_rejected``: items marked not relevant are not shown again (the index is searched for
  enough more to fill ``k``);
* ``rocchio: [b, c]``: the query vector moves towards the mean stored vector of the items marked
  relevant and away from those marked not relevant, ``q' = q + b mean(R) - c mean(N)``, normalised
  (Rocchio relevance feedback in the dual encoder's space).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...adapters.entries import ConfigError
from .state import Candidate, QueryState

if TYPE_CHECKING:
    from ..store.search import Searcher
    from .base import StageContext


@dataclass
class PreselectConfig:
    """Settings of the preselect stage."""

    k: int | None = None
    """Candidates to take from the index (None: as many as the hits asked for). Later stages
    rerank these, so a preset with a reranker sets it higher (e.g. 128)."""

    reference_weight: float = 0.0
    """For a composed query (a reference image and the edited description): the weight of the
    reference image's vector added to the description's, ``q = t + w i`` normalised (0: the text alone)."""
    exclude_rejected: bool = True
    """In a feedback round, leave out the items marked not relevant in earlier rounds."""
    rocchio: list[float] | None = None
    """``[b, c]``: weights of the relevant and not-relevant items' mean vectors added to and taken
    from the query vector in a feedback round (None: the query vector alone)."""

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 1:
            raise ConfigError(f"preselect: field 'k' must be >= 1 or null, got {self.k}")
        if self.reference_weight < 0:
            raise ConfigError(f"preselect: field 'reference_weight' must be >= 0, got {self.reference_weight}")
        if self.rocchio is not None and (len(self.rocchio) != 2 or min(self.rocchio) < 0):
            raise ConfigError(f"preselect: field 'rocchio' must be two weights >= 0 [b, c], got {self.rocchio}")


class Preselect:
    """CLIP (or any dual encoder) + FAISS: the query text or image -> the top-k items of the index."""

    name = "preselect"

    def __init__(self, searcher: Searcher, config: PreselectConfig | None = None) -> None:
        self.searcher = searcher
        self.config = config or PreselectConfig()

    @classmethod
    def from_context(cls, config: PreselectConfig, ctx: StageContext) -> Preselect:
        return cls(ctx.searcher, config)

    def run(self, state: QueryState) -> QueryState:
        k = max(self.config.k or state.k, state.k)
        start = time.perf_counter()
        if state.text is not None:
            query_vec, state.text, state.truncated = self.searcher.encode_query_text(state.text)  # (1, D)
            if state.image is not None and self.config.reference_weight:  # a composed query: fuse
                fused = query_vec + self.config.reference_weight * self.searcher.encode_query_image(state.image)
                query_vec = (fused / (np.linalg.norm(fused, axis=1, keepdims=True) + 1e-12)).astype(np.float32)
                state.notes["reference_weight"] = self.config.reference_weight
        elif state.image is not None:
            query_vec = self.searcher.encode_query_image(state.image)  # (1, D)
        else:
            raise ValueError("preselect needs a query text or a query image")
        relevant = [i for f in state.feedback for i in f.relevant]
        rejected = {i for f in state.feedback for i in f.irrelevant} - set(relevant)
        if self.config.rocchio and (relevant or rejected):
            query_vec = self._rocchio(query_vec, relevant, sorted(rejected))
            state.notes["rocchio"] = {"relevant": len(relevant), "not_relevant": len(rejected)}
        timings = {"encode": time.perf_counter() - start}
        dropped = rejected if self.config.exclude_rejected else set()
        hits = self.searcher.search_vectors(query_vec, k + len(dropped), timings)[0]
        hits = [h for h in hits if h.id not in dropped][:k]
        if dropped:
            state.notes["left_out_rejected"] = len(dropped)
        state.candidates = [
            Candidate(h.id, h.key, h.path, h.text, h.metadata, {self.name: h.score}, h.score) for h in hits
        ]
        state.notes.update(k=k, searched=state.text if state.text is not None else state.image, **timings)
        return state

    def _rocchio(self, query_vec: np.ndarray, relevant: list[int], rejected: list[int]) -> np.ndarray:
        b, c = self.config.rocchio or (0.0, 0.0)
        store = self.searcher.store
        vec = query_vec[0].astype(np.float32)
        if relevant and b:
            vec = vec + b * store.vectors_by_id(relevant).mean(0)
        if rejected and c:
            vec = vec - c * store.vectors_by_id(rejected).mean(0)
        return (vec / (np.linalg.norm(vec) or 1.0))[None].astype(np.float32)
