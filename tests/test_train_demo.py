"""Training (a few steps of a tiny model on a tiny scene benchmark), export, model card, demo.

The training tests are slow (``-m slow``); the demo with the tiny model runs by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from viewfinder.pipeline.cli import app
from viewfinder.pipeline.train.clip import ClipTrainConfig, SceneDataConfig, TrainSettings, train_clip


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> ClipTrainConfig:
    base = tmp_path_factory.mktemp("train")
    cfg = ClipTrainConfig(
        name="tiny-scene-clip",
        arch="tiny-test",
        data=SceneDataConfig(root=str(base / "scenes"), n_train=48, n_val=16, n_test=16, n_compositional=16),
        train=TrainSettings(steps=4, batch_size=8, warmup_steps=1, eval_every=2, checkpoint_every=2, log_every=1),
        out=str(base / "run"),
    )
    return cfg


@pytest.mark.slow
def test_training_writes_a_loadable_model_and_resumes(tiny_run: ClipTrainConfig) -> None:
    first = train_clip(tiny_run, progress=False, max_steps=2)
    assert first.steps == 2
    state_path = Path(tiny_run.out) / "checkpoint.pt"
    assert state_path.is_file()
    result = train_clip(tiny_run, progress=False)  # resumes at step 2, finishes at 4
    assert result.steps == 4
    log = [json.loads(line) for line in (Path(tiny_run.out) / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert "val_t2i_R@1" in log[-1]
    # The trained model loads back through the real open_clip loader.
    from viewfinder.adapters.registry import load_encoder

    enc = load_encoder({"name": "trained", "weights": "local-dir", "path": str(result.model_dir)})
    assert enc.encode_texts(["a red circle"]).shape == (1, 32)


@pytest.mark.slow
def test_export_eval_and_card(tiny_run: ClipTrainConfig, tmp_path: Path) -> None:
    train_clip(tiny_run, progress=False)  # already finished: a no-op that keeps the outputs
    runner = CliRunner()
    zoo = tmp_path / "zoo"
    res = runner.invoke(app, ["train", "export", tiny_run.out, "--to", str(zoo)])
    assert res.exit_code == 0, res.output
    assert (zoo / "open_clip_model.safetensors").is_file()
    preset = tmp_path / "preset.yaml"
    preset.write_text(f"encoder: {{name: tiny-zoo, weights: local-dir, path: {zoo}}}\nindex: {{num_workers: 0}}\n")
    report = tmp_path / "eval.json"
    res = runner.invoke(
        app,
        [
            "eval",
            tiny_run.data.root,
            "--split",
            "test",
            "-c",
            str(preset),
            "--out",
            str(report),
            "--plot",
            "--work-dir",
            str(tmp_path / "work"),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(report.read_text())
    assert {"partial", "binding_swap", "relation_swap", "composed"} <= set(data["query_sets"])
    assert report.with_suffix(".png").is_file()
    res = runner.invoke(app, ["train", "card", str(zoo), "--run", tiny_run.out, "--report", str(report)])
    assert res.exit_code == 0, res.output
    card = (zoo / "MODEL_CARD.md").read_text()
    assert "| test |" in card and "## Commands behind these figures" in card
    t2i = data["text_to_image"]
    assert f"| test | {data['images']} | {data['captions']} | {t2i['R@1']:.3f} | {t2i['R@5']:.3f} |" in card
    assert "Wording noise: 50% of training texts" in card and "*twins*" in card and "MLP ratio" in card


def test_demo_runs_and_reuses_its_cache(tmp_path: Path) -> None:
    from viewfinder.pipeline.demo.run import run_demo

    first = run_demo(tmp_path / "demo", "demo-tiny", n_scenes=60, k=4)
    assert first.contact_sheet.is_file() and first.contact_sheet.stat().st_size > 1000
    assert first.searches and all(len(r.hits) == 4 for _, r in first.searches)
    assert first.report["images"] >= 60
    generation = json.loads((first.index_dir / "manifest.json").read_text())["generation"]
    second = run_demo(tmp_path / "demo", "demo-tiny", n_scenes=60, k=4)
    assert second.report["text_to_image"] == first.report["text_to_image"]
    # Nothing was re-embedded: the index is still at the same committed generation.
    assert json.loads((second.index_dir / "manifest.json").read_text())["generation"] == generation


def test_demo_with_a_reranking_preset_shows_how_reranking_moved_the_hits(tmp_path: Path, tiny_encoder) -> None:
    import torch
    from PIL import Image
    from typer.testing import CliRunner

    from viewfinder.adapters.qformer_matcher import QFormerArch, QFormerHeads, save_qformer_dir
    from viewfinder.pipeline.cli import app
    from viewfinder.pipeline.demo.run import run_demo

    torch.manual_seed(0)
    clip = tiny_encoder.model
    arch = QFormerArch(
        hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, num_query_tokens=4, embed_dim=16
    )
    heads = QFormerHeads(arch, int(clip.visual.transformer.width), int(clip.transformer.width))
    save_qformer_dir(heads, tmp_path / "matcher", encoder_entry="tiny-test", fp16=False)
    (tmp_path / "matcher.yaml").write_text("family: qformer_clip\nweights: local-dir\npath: matcher\n")
    preset = tmp_path / "demo-rerank.yaml"
    preset.write_text(
        "encoder: tiny-test\nindex: {num_workers: 0}\n"
        "stages:\n  - preselect: {k: 8}\n  - rerank: {model: matcher.yaml, k: 8, itm_k: 4}\n"
    )
    result = run_demo(tmp_path / "demo", str(preset), n_scenes=40, k=4)
    assert result.rerank_preset == "demo-rerank" and result.reranked
    for query, before, after in result.reranked:
        assert query.text and all("rerank" not in h.scores for h in before.hits)
        assert all({"itm", "itc", "rerank"} <= set(h.scores) for h in after.hits)
    assert Image.open(result.contact_sheet).height > 0
    printed = CliRunner().invoke(app, ["demo", "--cache", str(tmp_path / "demo"), "-c", str(preset), "--scenes", "40"])
    assert printed.exit_code == 0, printed.output
    assert "reranked by demo-rerank" in printed.output and "itm" in printed.output


def test_card_names_a_conv_tower_and_the_gpu_it_trained_on() -> None:
    import json as _json

    from viewfinder.pipeline.eval.model_card import _arch_lines, _device

    arch = _json.loads((Path(__file__).parents[1] / "configs" / "arch" / "scene-clip-rn20.json").read_text())
    (line,) = _arch_lines(arch)
    assert "ModifiedResNet" in line and "[1, 1, 1, 1]" in line and "ViT" not in line and "patch" not in line
    gpu = {"cuda": "NVIDIA H200", "cpu_count": 16, "torch": "2.11.0", "processor": "x86_64", "platform": "p"}
    assert _device(gpu).startswith("NVIDIA H200") and "CPU cores (" not in _device(gpu)
    assert _device({**gpu, "cuda": None}).startswith("16 CPU cores (x86_64")
