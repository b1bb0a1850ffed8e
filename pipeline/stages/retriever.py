"""The pipeline as a LangChain retriever (and so a Runnable: ``invoke``, ``batch``, composition with ``|``).

Each hit becomes a ``Document`` whose text is the hit's generated caption (else the item's own
text) and whose metadata holds the id, key, path, rank, final score and every stage's score.
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict


class PipelineRetriever(BaseRetriever):
    """``PipelineRetriever(pipeline=Pipeline.from_preset(...), k=10).invoke("a red star")``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    pipeline: Any
    k: int = 10

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        result = self.pipeline.search(query, k=self.k)
        return [
            Document(
                page_content=hit.caption or hit.text or "",
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


__all__ = ["PipelineRetriever"]
