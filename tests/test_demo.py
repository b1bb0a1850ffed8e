"""The demo's index is an index like any other (it records its preset), its agent part shows progress,
and it writes its own timings (the figures the README quotes)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import tiny_scene_index, write_fake_chat

from viewfinder.pipeline import Pipeline, progress
from viewfinder.pipeline.demo.run import run_demo


@pytest.fixture(scope="module")
def rerank_preset(tmp_path_factory, tiny_encoder) -> Path:
    """A preset that reranks with a tiny Q-Former named by its folder."""
    import torch

    from viewfinder.adapters.qformer_matcher import QFormerArch, QFormerHeads, save_qformer_dir

    root = tmp_path_factory.mktemp("demo-preset")
    torch.manual_seed(0)
    clip = tiny_encoder.model
    arch = QFormerArch(
        hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, num_query_tokens=4, embed_dim=16
    )
    heads = QFormerHeads(arch, int(clip.visual.transformer.width), int(clip.transformer.width))
    save_qformer_dir(heads, root / "matcher", encoder_entry="tiny-test", fp16=False)
    preset = root / "demo-rerank.yaml"
    preset.write_text(
        "encoder: tiny-test\nindex: {num_workers: 0}\n"
        "stages:\n  - preselect: {k: 8}\n  - rerank: {model: matcher, k: 8, itm_k: 4}\n"
    )
    return preset


def test_the_demo_index_records_its_preset_so_searching_it_runs_the_same_stages(tmp_path, rerank_preset):
    result = run_demo(tmp_path / "demo", str(rerank_preset), n_scenes=40, k=4)
    manifest = json.loads((result.index_dir / "manifest.json").read_text())
    assert manifest["preset"]["name"] == "demo-rerank" and manifest["preset"]["source"] == str(rerank_preset)
    searched = Pipeline.from_preset(index=result.index_dir)  # no preset named: the index's own
    assert [s.name for s in searched.stages] == ["preselect", "rerank"]
    query, _, reranked = result.reranked[0]
    assert searched.search(query.text, k=4).hits == reranked.hits  # what the demo showed
    timings = json.loads((tmp_path / "demo" / "demo-timings.json").read_text())
    assert timings["generated_collection"] and timings["indexed_and_evaluated"] and "cpu_count" in timings["machine"]
    assert timings["seconds"]["total"] >= sum(v for k, v in timings["seconds"].items() if k != "total") * 0.99
    again = run_demo(tmp_path / "demo", str(rerank_preset), n_scenes=40, k=4)
    timings = json.loads((tmp_path / "demo" / "demo-timings.json").read_text())
    assert not timings["generated_collection"] and not timings["indexed_and_evaluated"]
    assert json.loads((again.index_dir / "manifest.json").read_text())["generation"] == manifest["generation"]


def test_the_agent_part_shows_a_bar_of_its_searches(tmp_path, monkeypatch):
    from viewfinder.adapters.registry import load_encoder
    from viewfinder.pipeline.demo.agent import run_agent_demo

    tiny_scene_index(tmp_path, seed=5, n_test=14)
    write_fake_chat(tmp_path / "llm.yaml", "a large red star at the top")
    (tmp_path / "agent.yaml").write_text(
        "encoder: tiny-test\nindex: {num_workers: 0}\nstages:\n  - rewrite: {model: llm.yaml}\n  - preselect: {k: 14}\n"
    )
    seen: list[tuple[str, object]] = []

    @contextmanager
    def recording_bar(description, total, unit="it", enabled=None):
        seen.append(("open", (description, total, unit, enabled)))

        class Bar:
            def advance(self, n=1):
                seen.append(("advance", n))

            def describe(self, text):
                seen.append(("describe", text))

            def update(self, completed, total=None):
                seen.append(("update", completed))

        yield Bar()

    monkeypatch.setattr(progress, "progress_bar", recording_bar)
    run_agent_demo(tmp_path / "scenes", tmp_path / "index", load_encoder("tiny-test"), k=4, rounds=2, sample=2,
                   preset=tmp_path / "agent.yaml", progress=True)  # fmt: skip
    assert seen[0] == ("open", ("agent: normalising a request", 7, "search", True))
    assert [e for e in seen if e[0] == "advance"] == [("advance", 1)] * 7  # the request, then 2 x rounds 0, 1, 2
    assert ("describe", "agent: feedback, query 2/2, round 2") in seen
