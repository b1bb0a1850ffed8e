"""Preselect: embed the query with the dual encoder and take the nearest items from the FAISS index."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

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

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 1:
            raise ConfigError(f"preselect: field 'k' must be >= 1 or null, got {self.k}")


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
        elif state.image is not None:
            query_vec = self.searcher.encode_query_image(state.image)  # (1, D)
        else:
            raise ValueError("preselect needs a query text or a query image")
        timings = {"encode": time.perf_counter() - start}
        hits = self.searcher.search_vectors(query_vec, k, timings)[0]
        state.candidates = [
            Candidate(h.id, h.key, h.path, h.text, h.metadata, {self.name: h.score}, h.score) for h in hits
        ]
        state.notes.update(k=k, searched=state.text if state.text is not None else state.image, **timings)
        return state
