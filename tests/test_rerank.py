"""The Q-Former matcher and the rerank stage: model folder round trip, scores, the feature cache,
bad input, training and export (tiny models built in code, checkpoints written by the tests)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_images
from typer.testing import CliRunner

from viewfinder.adapters.base import ImageTextMatcher
from viewfinder.adapters.entries import ConfigError, ModelEntry
from viewfinder.adapters.open_clip_encoder import ModelLoadError
from viewfinder.adapters.qformer_matcher import (
    QFormerArch,
    QFormerHeads,
    QFormerMatcher,
    load_qformer_matcher,
    save_qformer_dir,
)
from viewfinder.pipeline import Pipeline, build_index
from viewfinder.pipeline.cli import app
from viewfinder.pipeline.stages.presets import load_preset
from viewfinder.pipeline.store.cache import ModelCache

TINY = QFormerArch(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, num_query_tokens=4, embed_dim=16)


def _save(folder: Path, tiny_encoder, seed: int) -> Path:
    torch.manual_seed(seed)
    clip = tiny_encoder.model
    heads = QFormerHeads(TINY, int(clip.visual.transformer.width), int(clip.transformer.width))
    return save_qformer_dir(heads, folder, encoder_entry="tiny-test", fp16=False)


def _entry(folder: Path, **extra) -> ModelEntry:
    return ModelEntry(name="tiny-reranker", family="qformer_clip", weights="local-dir", path=str(folder), **extra)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tiny_encoder) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("matchers")
    return _save(root / "a", tiny_encoder, 0), _save(root / "b", tiny_encoder, 1)


@pytest.fixture(scope="module")
def collection(tmp_path_factory, model_dirs) -> Path:
    """24 images indexed with the tiny preset, and a preset file that reranks with matcher ``a``."""
    root = tmp_path_factory.mktemp("rerank")
    write_images(root / "images", 24, seed=5)
    build_index(root / "images", root / "index", preset="tiny", progress=False)
    for name, folder in zip(("a", "b"), model_dirs, strict=True):
        (root / f"matcher-{name}.yaml").write_text(f"family: qformer_clip\nweights: local-dir\npath: {folder}\n")
        (root / f"preset-{name}.yaml").write_text(
            "encoder: tiny-test\nindex: {batch_size: 16, num_workers: 0}\n"
            f"stages:\n  - preselect: {{k: 12}}\n  - rerank: {{model: matcher-{name}.yaml, k: 8}}\n"
        )
    return root


# ----------------------------------------------------------------------------------------- matcher
def test_saved_matcher_loads_back_with_the_same_scores(model_dirs, tiny_encoder):
    matcher = load_qformer_matcher(_entry(model_dirs[0], device="cpu"))
    assert isinstance(matcher, ImageTextMatcher)
    pixels = torch.rand(3, 3, 32, 32)
    features = matcher.image_features(pixels)
    assert tuple(features.shape[1:]) == matcher.feature_shape
    one = matcher.match(features, ["a red square"])
    each = matcher.match(features, ["a red square"] * 3)
    assert one.itm.shape == (3,) and ((one.itm >= 0) & (one.itm <= 1)).all()
    assert ((one.itc >= -1) & (one.itc <= 1)).all()
    np.testing.assert_allclose(one.itm, each.itm, atol=1e-5)
    np.testing.assert_allclose(one.itc, each.itc, atol=1e-5)
    again = load_qformer_matcher(_entry(model_dirs[0], device="cpu"))
    np.testing.assert_allclose(again.match(features, ["a red square"]).itm, one.itm, atol=1e-6)
    assert again.fingerprint == matcher.fingerprint
    assert load_qformer_matcher(_entry(model_dirs[1], device="cpu")).fingerprint != matcher.fingerprint


def test_match_refuses_a_wrong_number_of_texts(model_dirs):
    matcher = load_qformer_matcher(_entry(model_dirs[0], device="cpu"))
    with pytest.raises(ValueError, match="one text or one per image"):
        matcher.match(torch.zeros(3, *matcher.feature_shape), ["a", "b"])


def test_missing_model_folder_and_bad_checksum_are_clean_errors(tmp_path, model_dirs):
    with pytest.raises(ModelLoadError, match="train one with `viewfinder train reranker`"):
        load_qformer_matcher(_entry(tmp_path / "nothing"))
    with pytest.raises(ModelLoadError, match="checksum mismatch"):
        load_qformer_matcher(_entry(model_dirs[0], sha256="0" * 64))


# ------------------------------------------------------------------------------------------- stage
def test_rerank_stage_rescores_the_top_k_and_records_every_score(collection):
    pipeline = Pipeline.from_preset(str(collection / "preset-a.yaml"), index=collection / "index")
    result = pipeline.search("a red square", k=10)
    reranked = [h for h in result.hits if "rerank" in h.scores]
    assert len(reranked) == 8 and result.hits[:8] == reranked  # the top 8 were rescored and lead
    for hit in reranked:
        assert set(hit.scores) == {"preselect", "itm", "itc", "rerank"}
        assert hit.score == pytest.approx(hit.scores["itm"] + hit.scores["itc"])
    assert [h.score for h in reranked] == sorted((h.score for h in reranked), reverse=True)
    assert all("rerank" not in h.scores for h in result.hits[8:])
    step = result.trace["steps"][1]
    assert step["stage"] == "rerank" and step["notes"]["k"] == 8


def test_a_trained_models_folder_is_a_stages_model_without_an_entry_file(collection, model_dirs, tmp_path):
    """``model: runs/NAME/model`` (as `train reranker` writes it), relative to the preset's folder."""
    run = tmp_path / "runs" / "my-reranker"
    run.mkdir(parents=True)
    (run / "model").symlink_to(model_dirs[0], target_is_directory=True)
    stages = "stages:\n  - preselect: {k: 12}\n  - rerank: {model: %s, k: 8}\n"
    (tmp_path / "folder.yaml").write_text("encoder: tiny-test\n" + stages % "runs/my-reranker/model")
    by_folder = Pipeline.from_preset(str(tmp_path / "folder.yaml"), index=collection / "index")
    by_entry = Pipeline.from_preset(str(collection / "preset-a.yaml"), index=collection / "index")
    assert by_folder.search("a red square", k=8).hits == by_entry.search("a red square", k=8).hits
    # a folder that is not a model (or not a matcher) is one clear error that says what to name
    for model, message in (("runs/my-reranker", "model folder: .*runs/my-reranker/model"),
                           (str(tmp_path), "not a model folder.*qformer_config.json"),
                           (str(model_dirs[0].parent / "c"), "not a model folder")):  # fmt: skip
        (model_dirs[0].parent / "c").mkdir(exist_ok=True)
        (tmp_path / "bad.yaml").write_text("encoder: tiny-test\n" + stages % model)
        with pytest.raises(ConfigError, match=message):
            Pipeline.from_preset(str(tmp_path / "bad.yaml"), index=collection / "index")


def test_a_models_folder_names_its_family_or_says_what_it_holds(model_dirs, tmp_path):
    from viewfinder import Error
    from viewfinder.adapters.open_clip_encoder import zoo_dir
    from viewfinder.adapters.registry import load_encoder_entry, load_entry

    entry = load_entry(str(model_dirs[0]), "matcher")
    assert (entry.family, entry.weights, entry.path) == ("qformer_clip", "local-dir", str(model_dirs[0].resolve()))
    assert load_encoder_entry(str(zoo_dir("scene-clip"))).family == "open_clip"  # a CLIP's folder
    assert load_entry(str(zoo_dir("scene-captioner")), "captioner").family == "qformer_clip_captioner"
    with pytest.raises(Error, match="holds a matcher .qformer_clip., not a captioner"):
        load_entry(str(model_dirs[0]), "captioner")
    assert load_entry("scene-reranker", "matcher").weights == "zoo"  # a packaged name stays the packaged entry


def test_the_feature_cache_is_filled_once_and_keyed_by_the_model(collection):
    (collection / "index" / "cache.sqlite").unlink(missing_ok=True)
    first = Pipeline.from_preset(str(collection / "preset-a.yaml"), index=collection / "index")
    notes = first.search("a blue circle", k=8).trace["steps"][1]["notes"]
    # the ITC embeddings are computed from fresh vision features, which ITM then finds cached
    assert (notes["embeds_computed"], notes["embeds_cached"], notes["features_cached"]) == (8, 0, 8)
    notes = first.search("a blue circle", k=8).trace["steps"][1]["notes"]
    assert (notes["embeds_computed"], notes["embeds_cached"]) == (0, 8)
    assert (notes["features_computed"], notes["features_cached"]) == (0, 8)
    other = Pipeline.from_preset(str(collection / "preset-b.yaml"), index=collection / "index")
    notes = other.search("a blue circle", k=8).trace["steps"][1]["notes"]
    assert notes["embeds_computed"] == 8  # another model's features are never reused
    cache = ModelCache(collection / "index")
    matcher_a = first.stages[1].matcher
    stats = cache.feature_stats(matcher_a.fingerprint)
    assert stats.items >= 8 and stats.bytes_per_item == 2 * int(np.prod(matcher_a.feature_shape))
    embeds = cache.feature_stats(first.stages[1].embeds.fingerprint)
    assert embeds.items >= 8 and embeds.bytes_per_item == 2 * TINY.num_query_tokens * TINY.embed_dim
    assert cache.prune([matcher_a.fingerprint]) > 0
    assert cache.feature_stats(other.stages[1].matcher.fingerprint).items == 0


def test_itm_rescores_only_the_best_itm_k_by_itc(collection, tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text(
        (collection / "preset-a.yaml")
        .read_text()
        .replace("k: 8}", "k: 8, itm_k: 3}")
        .replace("matcher-a.yaml", str(collection / "matcher-a.yaml"))
    )
    result = Pipeline.from_preset(str(preset), index=collection / "index").search("a blue circle", k=10)
    with_itm = [h for h in result.hits if "itm" in h.scores]
    itc_only = [h for h in result.hits if "itc" in h.scores and "itm" not in h.scores]
    assert len(with_itm) == 3 and len(itc_only) == 5 and result.hits[:3] == with_itm
    assert min(h.scores["itc"] for h in with_itm) >= max(h.scores["itc"] for h in itc_only)
    assert [h.scores["itc"] for h in itc_only] == sorted((h.scores["itc"] for h in itc_only), reverse=True)
    assert result.trace["steps"][1]["notes"]["itm_k"] == 3
    # ITC from the cached embeddings equals the matcher's own pairwise ITC
    matcher = Pipeline.from_preset(str(preset), index=collection / "index").stages[1].matcher
    paths = [h.path for h in with_itm]
    from PIL import Image

    features = matcher.encode_images([Image.open(p) for p in paths])
    np.testing.assert_allclose(
        matcher.match(features, ["a blue circle"]).itc, [h.scores["itc"] for h in with_itm], atol=2e-3
    )


def test_cached_features_give_the_same_ranking_as_fresh_ones(collection, tmp_path):
    preset = collection / "preset-a.yaml"
    cached = Pipeline.from_preset(str(preset), index=collection / "index").search("a green star", k=8)
    uncached_preset = tmp_path / "preset.yaml"
    uncached_preset.write_text(
        preset.read_text()
        .replace("k: 8}", "k: 8, cache: false}")
        .replace("matcher-a.yaml", str(collection / "matcher-a.yaml"))
    )
    fresh = Pipeline.from_preset(str(uncached_preset), index=collection / "index").search("a green star", k=8)
    assert [h.id for h in fresh.hits] == [h.id for h in cached.hits]
    np.testing.assert_allclose([h.score for h in fresh.hits], [h.score for h in cached.hits], atol=2e-3)  # fp16 cache


def test_an_image_that_no_longer_decodes_is_reported_not_fatal(collection, tmp_path):
    import shutil

    root = tmp_path / "c"
    shutil.copytree(collection / "images", root / "images")
    build_index(root / "images", root / "index", preset="tiny", progress=False)
    for name in ("matcher-a.yaml", "preset-a.yaml"):
        shutil.copy(collection / name, root / name)
    top = Pipeline.from_preset("tiny", index=root / "index").search("a red square", k=8).hits[0]
    Path(top.path).write_bytes(b"not an image any more")  # before its features were ever cached
    result = Pipeline.from_preset(str(root / "preset-a.yaml"), index=root / "index").search("a red square", k=8)
    step = result.trace["steps"][1]["notes"]
    assert [f["id"] for f in step["failed"]] == [top.id]
    assert result.hits[7].id == top.id and "rerank" not in result.hits[7].scores  # kept, after the reranked ones


def test_an_image_query_keeps_the_preselect_order(collection):
    image = sorted((collection / "images").iterdir())[3]
    result = Pipeline.from_preset(str(collection / "preset-a.yaml"), index=collection / "index").search(
        image=image, k=5
    )
    assert "skipped" in result.trace["steps"][1]["notes"]
    assert all(set(h.scores) == {"preselect"} for h in result.hits)


@pytest.mark.parametrize(("stage", "message"), [("{k: 0}", "'k' must be >= 1"), ("{top: 3}", "unknown field")])
def test_bad_rerank_settings_are_config_errors(tmp_path, stage, message):
    path = tmp_path / "p.yaml"
    path.write_text(f"encoder: tiny-test\nstages:\n  - preselect\n  - rerank: {stage}\n")
    with pytest.raises(ConfigError, match=message):
        load_preset(str(path))


def test_search_cli_with_a_missing_reranker_is_one_clean_line(collection, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(f"encoder: tiny-test\nstages:\n  - preselect\n  - rerank: {{model: {tmp_path / 'none.yaml'}}}\n")
    result = CliRunner().invoke(app, ["search", "x", "--index", str(collection / "index"), "-c", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_search_cli_shows_itm_and_itc(collection):
    result = CliRunner().invoke(
        app, ["search", "a red square", "--index", str(collection / "index"), "-c", str(collection / "preset-a.yaml")]
    )
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[2]
    assert all(name in header for name in ("preselect", "itm", "itc", "rerank"))


# ---------------------------------------------------------------------------------------- training
def test_training_writes_a_loadable_matcher_that_exports(tmp_path):
    from viewfinder.pipeline.train.clip import SceneDataConfig
    from viewfinder.pipeline.train.export import export_run
    from viewfinder.pipeline.train.reranker import RerankerSettings, RerankerTrainConfig, train_reranker

    data = SceneDataConfig(root=str(tmp_path / "scenes"), n_train=24, n_val=8, n_test=8, n_compositional=8)
    settings = RerankerSettings(
        steps=3, batch_size=8, eval_every=3, log_every=1, checkpoint_every=1, eval_images=6, device="cpu",
        filler_prob=0.0,
    )  # fmt: skip
    config = RerankerTrainConfig("tiny-run", "tiny-test", TINY, data, settings, str(tmp_path / "run"))
    first = train_reranker(config, progress=False, max_steps=2)
    assert first.steps == 2 and (tmp_path / "run" / "checkpoint.pt").is_file()
    done = train_reranker(config, progress=False)  # resumes at step 2
    assert done.steps == 3
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and "val_swap_accuracy" in log[-1]
    weights = export_run(tmp_path / "run", tmp_path / "zoo")
    matcher = load_qformer_matcher(_entry(tmp_path / "zoo", device="cpu"))
    assert isinstance(matcher, QFormerMatcher) and weights.stat().st_size > 0
    assert matcher.match(matcher.image_features(torch.rand(2, 3, 32, 32)), ["a star"]).itm.shape == (2,)
    assert replace(config.train, steps=5).steps == 5


def _index_with_rerank(collection: Path, root: Path, *more: str) -> tuple[list[str], str]:
    """Copy the collection to ``root`` and index it with ``--with rerank``: (the command, its output)."""
    shutil.copytree(collection / "images", root / "images")
    for name in ("matcher-a.yaml", "preset-a.yaml"):
        shutil.copy(collection / name, root / name)
    args = ["index", str(root / "images"), "--index", str(root / "index"), "-c", str(root / "preset-a.yaml")]
    result = CliRunner().invoke(app, [*args, "--with", "rerank", *more])
    assert result.exit_code == 0, result.output
    return args, result.output


def test_index_with_rerank_fills_the_feature_cache_at_index_time(collection, tmp_path):
    root = tmp_path / "d"
    args, output = _index_with_rerank(collection, root)
    assert "24 computed, 0 already cached" in output
    again = CliRunner().invoke(app, [*args, "--with", "rerank"])
    assert "0 computed, 24 already cached" in again.output
    notes = (
        Pipeline.from_preset(index=root / "index").search("a red square", k=8).trace["steps"][1]["notes"]
    )  # the index remembers the preset, rerank included
    assert (notes["features_computed"], notes["features_cached"]) == (0, 8)
    runner = CliRunner()
    base = ["index", str(root / "images"), "--index", str(root / "index")]
    bad = runner.invoke(app, [*base, "--with", "colour"])
    assert bad.exit_code == 2 and "unknown ['colour']; known: ['caption', 'rerank']" in bad.output
    missing = runner.invoke(app, [*base, "--with", "caption"])
    assert missing.exit_code == 2 and "has no caption stage" in missing.output


def test_index_with_rerank_on_ray_caches_the_same_features(collection, tmp_path, local_ray):
    import sqlite3

    _, output = _index_with_rerank(collection, tmp_path / "ray", "--engine", "ray")
    assert "24 computed, 0 already cached" in output
    _index_with_rerank(collection, tmp_path / "local")

    def cached(root):
        with sqlite3.connect(root / "index" / "cache.sqlite") as db:
            rows = db.execute("SELECT item_id, fingerprint, data FROM features").fetchall()
        return {(i, fp): np.frombuffer(data, np.float16) for i, fp, data in rows}

    on_ray, here = cached(tmp_path / "ray"), cached(tmp_path / "local")
    assert set(on_ray) == set(here) and len(here) == 48  # features and ITC embeddings of 24 images
    for key, value in here.items():
        np.testing.assert_allclose(on_ray[key].astype(np.float32), value.astype(np.float32), atol=2e-3)


def test_bench_rerank_times_four_pipelines_in_one_run(collection, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        app,
        ["bench", "rerank", "--index", str(collection / "index"), "--model", str(collection / "matcher-a.yaml"),
         "-k", "8", "--itm-k", "4", "--queries", "6", "--json", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = json.loads(out.read_text())
    names = [r["preset"] for r in run["results"]]
    assert names == [
        "preselect only",
        "+ rerank 8, ITM 4 (cache)",
        "+ rerank 8, ITM 4 (no cache)",
        "+ rerank 8, ITM 8 (cache)",
    ]
    assert run["results"][0]["ratio_to_first"] == 1.0 and set(run["results"][1]["stages_p50_ms"]) == {
        "preselect",
        "rerank",
    }


def test_rerank_order_scores_the_best_itm_k_and_keeps_the_rest_in_itc_order():
    from viewfinder.pipeline.stages.rerank import RerankConfig, rerank_order

    itc = np.array([0.1, 0.5, 0.3, 0.4, 0.2])
    asked: list[list[int]] = []

    def itm(positions: np.ndarray) -> np.ndarray:
        asked.append(sorted(positions.tolist()))
        return np.array([{1: 0.0, 3: 0.9, 2: np.nan}[int(p)] for p in positions])  # 2: unreadable

    order, scores = rerank_order(itc, np.zeros(5), itm, RerankConfig(itm_k=3))
    assert asked == [[1, 2, 3]]  # the three best by ITC
    assert order.tolist() == [3, 1, 2, 4, 0]  # ITM-scored first by ITM + ITC, then the rest by ITC
    assert np.isnan(scores["itm"][[0, 2, 4]]).all() and scores["final"][3] == pytest.approx(1.3)
    # the preselect score fused in changes which candidates ITM sees
    order, _ = rerank_order(
        itc, np.array([5.0, 0, 0, 0, 0]), lambda p: np.zeros(len(p)), RerankConfig(itm_k=1, preselect_weight=1.0)
    )
    assert order[0] == 0
    order, scores = rerank_order(itc, np.zeros(5), lambda p: np.ones(len(p)), RerankConfig(itm_k=None))
    assert not np.isnan(scores["itm"]).any() and order.tolist() == [1, 3, 2, 4, 0]


def test_eval_reranks_a_scene_split_with_the_presets_rule(collection, tmp_path):
    from viewfinder.pipeline.scenes.dataset import ensure_scene_dataset
    from viewfinder.pipeline.scenes.generator import SceneGeneratorConfig

    root = ensure_scene_dataset(
        tmp_path / "scenes", SceneGeneratorConfig(seed=4), n_train=0, n_val=0, n_test=10, n_compositional=0
    )
    preset = tmp_path / "preset.yaml"
    preset.write_text(
        (collection / "preset-a.yaml")
        .read_text()
        .replace("k: 8}", "k: 6, itm_k: 2, preselect_weight: 0.5}")
        .replace("matcher-a.yaml", str(collection / "matcher-a.yaml"))
    )
    out = tmp_path / "eval.json"
    args = ["eval", str(root), "--split", "test", "-c", str(preset), "--out", str(out)]
    extra = ["--work-dir", str(tmp_path / "work"), "--itm-k", "3", "--preselect-weight", "2"]
    result = CliRunner().invoke(app, [*args, *extra])
    assert result.exit_code == 0, result.output
    rerank = json.loads(out.read_text())["rerank"]
    assert (rerank["k"], rerank["itm_k"]) == (6, 3)  # the preset's k, the command line's itm_k
    assert rerank["weights"] == {"itm": 1.0, "itc": 1.0, "preselect": 2.0}
    t2i = rerank["t2i"]
    assert t2i["n_queries"] >= 10 and 0.0 <= t2i["reranked"]["R@1"] <= 1.0
    # targets outside the top k keep their rank, so R@10 can only move within the top k
    assert t2i["reranked"]["R@10"] == pytest.approx(t2i["dual_encoder_same_queries"]["R@10"])
    assert "ITM on 3" in result.output


def _user_manifest(folder: Path, n: int = 16) -> Path:
    """A user's collection: images and a JSONL manifest with one or two captions each, no splits."""
    paths = write_images(folder / "images", n, seed=9)
    words = ["red", "blue", "green", "small", "large", "round", "square", "bright"]
    lines = [
        json.dumps({"path": f"images/{p.name}", "caption": [f"a {words[i % 8]} picture"] + ([f"number {i}"] * (i % 2))})
        for i, p in enumerate(paths)
    ]
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "data.jsonl"


def test_reranker_trains_on_a_users_manifest_then_fine_tunes_from_it_with_lora(tmp_path):
    from safetensors.torch import load_file

    manifest = _user_manifest(tmp_path / "user")
    settings = (
        "{steps: 2, batch_size: 6, eval_every: 2, log_every: 1, checkpoint_every: 1, eval_images: 4, device: cpu}"
    )
    arch = "{hidden_size: 32, num_layers: 1, num_heads: 2, intermediate_size: 64, num_query_tokens: 4, embed_dim: 16}"
    (tmp_path / "full.yaml").write_text(
        f"name: user-full\nencoder: tiny-test\narch: {arch}\ndataset: {{path: {manifest}, val_fraction: 0.25}}\n"
        f"train: {settings}\nout: {tmp_path / 'full'}\n"
    )
    runner = CliRunner()
    result = runner.invoke(app, ["train", "reranker", "--config", str(tmp_path / "full.yaml")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["train_rows"] == 12 and "val_rerank_R@1" in summary["final_eval"]
    assert "val_swap_accuracy" not in summary["final_eval"]  # no scene graphs, no swap pairs
    (tmp_path / "lora.yaml").write_text(
        f"name: user-lora\ndataset: {{path: {manifest}}}\n"
        f"init: {{model: {tmp_path / 'full' / 'model'}, lora: {{r: 2}}}}\n"
        f"train: {settings}\nout: {tmp_path / 'lora'}\n"
    )
    result = runner.invoke(app, ["train", "reranker", "--config", str(tmp_path / "lora.yaml")])
    assert result.exit_code == 0, result.output
    before = load_file(str(tmp_path / "full" / "model" / "qformer.safetensors"))
    after = load_file(str(tmp_path / "lora" / "model" / "qformer.safetensors"))
    assert set(before) == set(after)  # the adapters were merged: a plain reranker folder again
    assert torch.equal(before["query_tokens"], after["query_tokens"])  # frozen under LoRA
    assert torch.equal(before["text_in.weight"], after["text_in.weight"])
    adapted = [k for k in before if k.startswith("qformer.") and not torch.equal(before[k], after[k])]
    assert adapted and all(k.endswith("weight") for k in adapted)  # LoRA moved the adapted linear layers
    assert not torch.equal(before["itm_head.weight"], after["itm_head.weight"])  # heads train fully
    matcher = load_qformer_matcher(_entry(tmp_path / "lora" / "model", device="cpu"))
    assert matcher.match(matcher.image_features(torch.rand(2, 3, 32, 32)), ["a red picture"]).itm.shape == (2,)


def test_a_missing_or_empty_user_dataset_is_a_clean_error(tmp_path):
    (tmp_path / "run.yaml").write_text(f"name: x\nencoder: tiny-test\ndataset: {{path: {tmp_path / 'none.jsonl'}}}\n")
    result = CliRunner().invoke(app, ["train", "reranker", "--config", str(tmp_path / "run.yaml")])
    assert result.exit_code == 2 and "none.jsonl not found" in result.output and "Traceback" not in result.output


def test_bench_query_compares_presets_in_one_run(collection, tmp_path):
    out = tmp_path / "bench.json"
    preset = str(collection / "preset-a.yaml")
    args = ["bench", "query", "--index", str(collection / "index"), "-c", "tiny", "-c", preset, "--queries", "4"]
    result = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    assert [r["preset"] for r in rows] == ["tiny", preset] and rows[0]["ratio_to_first"] == 1.0
    assert set(rows[1]["stages_p50_ms"]) == {"preselect", "rerank"}


def test_reranker_card_quotes_the_eval_reports(tmp_path):
    from viewfinder.pipeline.eval.reranker_card import render_reranker_card

    zoo = Path(__file__).resolve().parents[1] / "configs" / "zoo" / "scene-reranker"
    train_config = json.loads((zoo / "train_config.json").read_text())
    summary = json.loads((zoo / "train_summary.json").read_text())
    machine = {"cpu_count": 2, "processor": "x86_64", "platform": "Linux", "torch": "2"}
    rerank = {
        "k": 128, "itm_k": 8,
        "t2i": {"reranked": {"R@1": 0.9, "R@5": 1.0}, "dual_encoder_same_queries": {"R@1": 0.8, "R@5": 1.0}},
        "binding_swap": {"accuracy": 0.7}, "relation_swap": {"accuracy": 0.6},
        "partial": {"attributes": {"shape": {"share_at_k": 0.5}}},
    }  # fmt: skip
    sets = {"binding_swap": {"accuracy": 0.72}, "relation_swap": {"accuracy": 0.5},
            "partial": {"attributes": {"shape": {"share_at_k": 0.48}}}}  # fmt: skip
    report = {"split": "test", "command": "viewfinder eval X", "machine": machine, "rerank": rerank, "query_sets": sets}
    card = render_reranker_card("scene-reranker", train_config, summary, [report], 7.1)
    assert "| test | 128 | 8 | 0.800 / **0.900** |" in card and "`viewfinder eval X`" in card
