"""The pipeline as a LangChain retriever: LangChain's own standard retriever tests (``langchain-tests``)
run against :class:`PipelineRetriever` on a tiny index built here, and what a Document reads as."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import write_images
from langchain_core.retrievers import BaseRetriever
from langchain_tests.integration_tests import RetrieversIntegrationTests

from viewfinder import Error
from viewfinder.pipeline import Pipeline, build_index
from viewfinder.pipeline.stages.retriever import PipelineRetriever

N_IMAGES = 16


@pytest.fixture(scope="module")
def folder_index(tmp_path_factory) -> Path:
    """16 images from a plain folder (no texts), indexed with the tiny preset (no caption stage)."""
    root = tmp_path_factory.mktemp("retriever")
    write_images(root / "images", N_IMAGES, seed=11)
    build_index(root / "images", root / "index", preset="tiny", progress=False)
    return root / "index"


@pytest.fixture(scope="module")
def manifest_index(tmp_path_factory) -> Path:
    """The same kind of images from a JSONL manifest with a caption each."""
    root = tmp_path_factory.mktemp("retriever-manifest")
    paths = write_images(root / "images", 6, seed=12)
    lines = [json.dumps({"path": str(p), "caption": [f"picture number {i}"]}) for i, p in enumerate(paths)]
    (root / "items.jsonl").write_text("\n".join(lines) + "\n")
    build_index(root / "items.jsonl", root / "index", preset="tiny", progress=False)
    return root / "index"


class TestPipelineRetrieverStandard(RetrieversIntegrationTests):
    """LangChain's contract for retrievers: ``k`` in the constructor and in ``invoke``, Documents back,
    ``ainvoke`` too."""

    pipeline: Any = None

    # The one async standard test runs on pytest-asyncio (a langchain-tests dependency). Marked where it is
    # defined, not overridden: the standard suite refuses overridden tests.
    pytest.mark.asyncio(RetrieversIntegrationTests.test_ainvoke_returns_documents)

    @pytest.fixture(autouse=True)
    def _pipeline(self, folder_index: Path) -> None:
        type(self).pipeline = Pipeline.from_preset("tiny", index=folder_index)

    @property
    def retriever_constructor(self) -> type[BaseRetriever]:
        return PipelineRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"pipeline": self.pipeline, "k": 10}

    @property
    def retriever_query_example(self) -> str:
        return "a red square on the left"


def test_search_settings_given_to_invoke_override_the_constructors_for_that_call(folder_index):
    retriever = Pipeline.from_preset("tiny", index=folder_index).as_retriever(k=5)
    assert len(retriever.invoke("a blue circle", k=2)) == 2
    assert len(retriever.invoke("a blue circle")) == 5  # the constructor's k again
    assert [len(d) for d in retriever.batch(["a", "b"], k=3)] == [3, 3]
    with pytest.raises(Error, match="unknown search setting.*top_k"):
        retriever.invoke("a blue circle", top_k=2)
    with pytest.raises(Error, match="k must be"):
        retriever.invoke("a blue circle", k=0)


def test_a_document_reads_as_the_caption_else_the_items_text_else_its_path(folder_index, manifest_index):
    from_folder = Pipeline.from_preset("tiny", index=folder_index).as_retriever(k=4).invoke("a red star")
    assert [d.page_content for d in from_folder] == [d.metadata["path"] for d in from_folder]  # no text: the path
    assert all(d.page_content for d in from_folder)
    from_manifest = Pipeline.from_preset("tiny", index=manifest_index).as_retriever(k=3).invoke("a red star")
    assert all(d.page_content.startswith("picture number ") for d in from_manifest)  # the manifest's caption
