"""The pipeline as a LangChain retriever (and so a Runnable: ``invoke``, ``batch``, composition with ``|``).

Each hit becomes a ``Document`` whose text is the hit's generated caption, else the item's own text
(a manifest's caption), else its path, and whose metadata holds the id, key, path, rank, final score
and every stage's score. As LangChain's retrievers do, search settings given to ``invoke`` override
the constructor's for that call: ``retriever.invoke("a red star", k=3)``. LangChain's standard
retriever tests (``langchain-tests``) run against it in the project's tests.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from ..store.search import Hit, QueryError

SEARCH_SETTINGS = ("k",)
"""Settings ``invoke`` takes as keyword arguments, each overriding the constructor's for one call."""


def hit_text(hit: Hit) -> str:
    """What a hit reads as: its generated caption, else the item's own text, else its path."""
    return hit.caption or hit.text or hit.path


class PipelineRetriever(BaseRetriever):
    """``PipelineRetriever(pipeline=Pipeline.from_preset(...), k=10).invoke("a red star")``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    pipeline: Any
    k: int = 10
    """Hits per query (``invoke(query, k=...)`` overrides it for one call)."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **settings: Any
    ) -> list[Document]:
        unknown = sorted(set(settings) - set(SEARCH_SETTINGS))
        if unknown:
            raise QueryError(f"unknown search setting(s) {unknown}; the retriever takes {list(SEARCH_SETTINGS)}")
        result = self.pipeline.search(query, k=settings.get("k", self.k))  # checks k (store.search.check_query)
        return [
            Document(
                page_content=hit_text(hit),
                metadata={
                    "id": hit.id,
                    "key": hit.key,
                    "path": hit.path,
                    "rank": hit.rank,
                    "score": hit.score,
                    "scores": dict(hit.scores),
                    "query": result.query,
                },
            )  # fmt: skip
            for hit in result.hits
        ]


__all__ = ["SEARCH_SETTINGS", "PipelineRetriever", "hit_text"]
