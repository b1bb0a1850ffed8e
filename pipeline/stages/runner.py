"""A pipeline: the stages a preset names, run in order over one shared :class:`QueryState`."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..store.search import Hit, Searcher, SearchResult, check_query
from .base import Stage, StageContext
from .registry import build_stages, has_stage
from .state import QueryState
from .trace import Trace

if TYPE_CHECKING:
    from ...adapters.base import ImageTextEncoder
    from ..config import Preset
    from ..store.index_store import IndexStore

logger = logging.getLogger(__name__)


class Pipeline:
    """Runs a query through its stages and returns typed hits with a trace.

    Build it from a preset with :meth:`from_preset`, or from stage objects directly (each takes
    its model through its constructor, so any stage can be a test double).
    """

    def __init__(self, stages: list[Stage], store: IndexStore, *, name: str = "custom") -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.stages = stages
        self.store = store
        self.name = name

    @classmethod
    def from_preset(
        cls,
        preset: str | Path | Preset | None = None,
        *,
        index: str | Path,
        encoder: ImageTextEncoder | None = None,
    ) -> Pipeline:
        """The pipeline ``preset`` describes over ``index`` (None: the preset the index was built with).

        ``encoder`` overrides loading the preset's encoder (an object already in memory).
        """
        from ...adapters.registry import load_encoder
        from ..store.index_store import IndexStore
        from .presets import preset_for_index

        store = IndexStore.open(index)
        chosen = preset_for_index(preset, store)
        searcher = Searcher(store, encoder or load_encoder(chosen.encoder), chosen.index)
        ctx = StageContext(chosen, store, searcher)
        return cls(build_stages(chosen.stages, ctx), store, name=chosen.name)

    def run(self, state: QueryState, trace: Trace) -> QueryState:
        """One pass of every stage over ``state``, each step recorded in ``trace``."""
        for stage in self.stages:
            query_in = state.text
            start = time.perf_counter()
            state = stage.run(state)
            trace.record(stage.name, state, query_in, time.perf_counter() - start)
        return state

    def search(
        self, text: str | None = None, *, image: str | Path | None = None, edit: str | None = None, k: int = 10
    ) -> SearchResult:
        """Search with a text or (``image=``) an image, or a composed query (a reference ``image`` and
        an ``edit`` in words, for a pipeline with a ``compose`` stage); the top ``k`` hits with every
        stage's score."""
        return self.run_round(self.query_state(text, image=image, edit=edit, k=k))

    @property
    def composes(self) -> bool:
        """Whether a stage of this pipeline applies an edit to a reference image (composed queries)."""
        return has_stage((getattr(stage, "name", "") for stage in self.stages), composes=True)

    def query_state(
        self, text: str | None = None, *, image: str | Path | None = None, edit: str | None = None, k: int = 10
    ) -> QueryState:
        """The checked round-0 state of a query (a :class:`QueryError` says what is wrong with it)."""
        from .compose import composed_edit

        check_query(text, image, k, composed=True)
        edit = composed_edit(self.composes, self.name, image, edit)
        image_str = None if image is None else str(image)
        return QueryState(query=edit or text, image=image_str, text=text, edit=edit, k=k)

    def as_retriever(self, k: int = 10) -> Any:
        """This pipeline as a LangChain ``BaseRetriever`` (a Runnable) returning ``Document`` hits."""
        from .retriever import PipelineRetriever

        return PipelineRetriever(pipeline=self, k=k)

    def run_round(self, state: QueryState) -> SearchResult:
        """One pass over ``state`` (a new query, or a session's next round), as a :class:`SearchResult`."""
        trace = Trace(self.name, state.query, state.image)
        state = self.run(state, trace)
        hits = [
            Hit(rank, c.id, c.key, c.path, c.score, c.text, c.metadata, dict(c.scores), c.caption)
            for rank, c in enumerate(state.candidates[: state.k], start=1)
        ]
        return SearchResult(state.text, state.image, hits, trace.timings, state.truncated, trace.to_dict())
