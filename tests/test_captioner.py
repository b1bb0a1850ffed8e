"""The Q-Former scene captioner: vocabulary, model folder round trip, decoding, training, caption F1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from viewfinder.adapters.base import ImageCaptioner
from viewfinder.adapters.entries import ConfigError, ModelEntry
from viewfinder.adapters.qformer_captioner import (
    CaptionerArch,
    CaptionerHeads,
    CaptionVocab,
    QFormerCaptioner,
    load_qformer_captioner,
    save_captioner_dir,
)
from viewfinder.pipeline.eval.captions import caption_f1, parse_caption, score_caption
from viewfinder.pipeline.scenes.graph import Scene, SceneObject

TINY_ARCH = {
    "qformer_hidden": 32, "qformer_layers": 1, "qformer_heads": 2, "qformer_intermediate": 64,
    "num_query_tokens": 4, "lm_hidden": 32, "lm_layers": 1, "lm_heads": 2, "max_caption_tokens": 40,
    "dropout": 0.0,
}  # fmt: skip
CAPTIONS = [
    "a small red circle in the top left and a large blue square at the bottom",
    "on a black background: a large green star on the right",
    "in the centre, a small yellow heart; on the left, a large pink cross",
]


def _heads(vision_width: int, seed: int = 0) -> tuple[CaptionerHeads, CaptionVocab]:
    torch.manual_seed(seed)
    vocab = CaptionVocab.build(CAPTIONS)
    return CaptionerHeads(CaptionerArch(**TINY_ARCH), vision_width, vocab).eval(), vocab


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory: pytest.TempPathFactory, tiny_encoder) -> Path:
    heads, vocab = _heads(int(tiny_encoder.model.visual.transformer.width))
    return save_captioner_dir(heads, vocab, tmp_path_factory.mktemp("captioner") / "model", encoder_entry="tiny-test")


def _entry(folder: Path, **extra) -> ModelEntry:
    return ModelEntry(name="tiny-captioner", family="qformer_clip_captioner", weights="local-dir", path=str(folder),
                      device="cpu", **extra)  # fmt: skip


@pytest.fixture(scope="module")
def captioner(saved_dir: Path) -> QFormerCaptioner:
    return load_qformer_captioner(_entry(saved_dir))


@pytest.fixture(scope="module")
def pixels(tiny_encoder) -> torch.Tensor:
    return torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------- vocab
def test_vocab_round_trip_and_unknown_words() -> None:
    vocab = CaptionVocab.build(CAPTIONS)
    assert vocab.tokens[:4] == ["[PAD]", "[BOS]", "[EOS]", "[UNK]"]
    assert CaptionVocab.build(reversed(CAPTIONS)).tokens == vocab.tokens  # deterministic
    for caption in CAPTIONS:
        assert vocab.decode(vocab.encode(caption)) == caption
    assert vocab.encode("a purple blob")[1:] == [vocab.unk_id, vocab.unk_id]
    rows = vocab.encode_batch(CAPTIONS[:1], 6)
    assert rows[0, 0] == vocab.bos_id and rows.shape == (1, 6)
    assert CaptionVocab.from_json(vocab.to_json()).tokens == vocab.tokens


# ---------------------------------------------------------------------------------------- adapter
def test_save_load_gives_the_same_captions(tiny_encoder, saved_dir: Path, captioner, pixels) -> None:
    from viewfinder.adapters.registry import load_model

    heads, vocab = _heads(int(tiny_encoder.model.visual.transformer.width))
    direct = QFormerCaptioner(
        tiny_encoder.model,
        tiny_encoder.image_transform,
        heads,
        vocab,
        name="x",
        clip_fingerprint=tiny_encoder.fingerprint,
    )
    assert isinstance(captioner, ImageCaptioner)
    expected = direct.caption(pixels, max_new_tokens=8)
    assert captioner.caption(pixels, max_new_tokens=8) == expected
    assert any(expected)  # words, not only empty strings ([BOS]/[PAD]/[UNK] are never generated)
    assert captioner.fingerprint == direct.fingerprint
    via_registry = load_model(
        {"name": "c", "family": "qformer_clip_captioner", "weights": "local-dir", "path": str(saved_dir)}, "captioner"
    )
    assert via_registry.fingerprint == captioner.fingerprint
    features = captioner.image_features(pixels)
    assert features.shape == (5, *captioner.feature_shape)
    assert captioner.caption_features(features, max_new_tokens=8) == expected


def test_fingerprint_and_checksum(tiny_encoder, saved_dir: Path, captioner, tmp_path: Path) -> None:
    from viewfinder.adapters.open_clip_encoder import ModelLoadError, sha256_file

    heads, vocab = _heads(int(tiny_encoder.model.visual.transformer.width), seed=1)
    other = save_captioner_dir(heads, vocab, tmp_path / "other", encoder_entry="tiny-test")
    assert load_qformer_captioner(_entry(other)).fingerprint != captioner.fingerprint
    digest = sha256_file(saved_dir / "captioner.safetensors")
    load_qformer_captioner(_entry(saved_dir, sha256=digest))
    with pytest.raises(ModelLoadError, match="checksum"):
        load_qformer_captioner(_entry(saved_dir, sha256="0" * 64))
    with pytest.raises(ModelLoadError, match="captioner_config.json"):
        load_qformer_captioner(_entry(tmp_path / "missing"))


def test_decoding_modes(captioner, pixels) -> None:
    greedy = captioner.caption(pixels)
    assert greedy == captioner.caption(pixels) and len(greedy) == 5
    assert [captioner.caption(p[None])[0] for p in pixels] == greedy  # independent of batching
    assert captioner.caption(pixels[:0]) == []
    assert all(captioner.caption(pixels, min_new_tokens=3, max_new_tokens=4, seed=1))  # no row ends at once
    beams = captioner.caption(pixels, num_beams=3, max_new_tokens=6)
    assert len(beams) == 5 and all(isinstance(c, str) for c in beams)
    state = torch.get_rng_state()
    sampled = captioner.caption(pixels, do_sample=True, temperature=0.8, top_p=0.9, seed=3, max_new_tokens=6)
    assert torch.equal(state, torch.get_rng_state())  # a seeded draw leaves the global RNG alone
    assert sampled == captioner.caption(pixels, do_sample=True, temperature=0.8, top_p=0.9, seed=3, max_new_tokens=6)
    assert all(len(c.split()) <= 6 for c in sampled)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prompt": "a photo of"}, "takes no prompt"),
        ({"beams": 2}, "unknown decoding option"),
        ({"temperature": 0.7}, "do_sample=True"),
        ({"do_sample": True, "num_beams": 2}, "not both"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"do_sample": True, "top_p": 1.5}, "top_p"),
        ({"num_beams": True}, "num_beams"),
        ({"min_new_tokens": 5, "max_new_tokens": 4}, "min_new_tokens"),
    ],
)
def test_bad_decoding_options(captioner, pixels, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        captioner.caption(pixels[:1], **options)


# ---------------------------------------------------------------------------------------- training
def _write_config(tmp_path: Path, steps: int = 3) -> Path:
    config = {
        "name": "tiny-captioner",
        "encoder": "tiny-test",
        "arch": TINY_ARCH,
        "data": {"root": str(tmp_path / "scenes"), "image_size": 32, "n_train": 40, "n_val": 8, "n_test": 0,
                 "n_compositional": 0},
        "train": {"steps": steps, "batch_size": 8, "eval_every": 2, "checkpoint_every": 1, "log_every": 1,
                  "eval_images": 4, "device": "cpu", "warmup_steps": 1},
        "out": str(tmp_path / "run"),
    }  # fmt: skip
    path = tmp_path / "captioner.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def test_train_writes_a_loadable_model_and_resumes(tmp_path: Path) -> None:
    from viewfinder.pipeline.train.captioner import load_captioner_config, train_captioner

    config = load_captioner_config(_write_config(tmp_path))
    config.train.threads = 1
    threads = torch.get_num_threads()
    first = train_captioner(config, progress=False, max_steps=2)
    assert first.steps == 2 and torch.get_num_threads() == threads  # the run's thread count is scoped to it
    model = load_qformer_captioner(_entry(first.model_dir))
    assert json.loads((first.model_dir / "captioner_config.json").read_text())["encoder"] == "tiny-test"
    assert len(model.caption(torch.zeros(2, 3, 32, 32), max_new_tokens=4)) == 2
    second = train_captioner(config, progress=False)
    assert second.steps == 3  # resumed from the step-2 checkpoint, one more step
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert "val_f1" in log[1] and log[1]["val_reference_f1"] == pytest.approx(1.0)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["train_images"] == 40
    vocab = json.loads((first.model_dir / "vocab.json").read_text())["tokens"]
    assert "circle" in vocab or "square" in vocab


def test_config_errors(tmp_path: Path) -> None:
    from viewfinder.pipeline.train.captioner import load_captioner_config

    packaged = load_captioner_config("scene-captioner")
    assert packaged.encoder == "scene-clip" and packaged.data.root == "~/.cache/viewfinder/scenes-64"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nepochs: 3\n")
    with pytest.raises(ConfigError, match="epochs"):
        load_captioner_config(bad)
    bad.write_text("name: x\narch: {lm_hidden: 30, lm_heads: 4}\n")
    with pytest.raises(ConfigError, match="lm_hidden"):
        load_captioner_config(bad)


def test_packaged_model_entry() -> None:
    from viewfinder.adapters.registry import load_entry

    entry = load_entry("scene-captioner", "captioner")
    assert entry.family == "qformer_clip_captioner" and entry.weights == "zoo"


# ---------------------------------------------------------------------------------------- caption F1
def _scene() -> Scene:
    return Scene(
        id="s",
        background="black",
        objects=[
            SceneObject("circle", "red", "small", 0.15, 0.15),  # top left
            SceneObject("square", "blue", "large", 0.8, 0.8),  # bottom right
        ],
    )


@pytest.mark.parametrize(
    "caption",
    [
        "a small red circle in the top left and a large blue square in the bottom right",  # listing
        "on a black background: a large blue square in the bottom right and a small red circle in the top left",
        "there is a small red circle to the left of a large blue square",  # relation places both
        "two objects: a small red circle in the top left and a large blue square in the bottom right",
        "in the top left, a small red circle; in the bottom right, a large blue square",
        "we see a large blue square in the bottom right and a small red circle in the top left on a black backdrop",
        "this scene contains two shapes: a small red circle in the top left and a large blue square "
        "in the bottom right",
        "a large blue square sits below a small red circle",
        "a small red circle sits in the top left; also a large blue square in the bottom right",
    ],
)
def test_template_phrasings_parse_exactly(caption: str) -> None:
    scores = caption_f1([caption], [_scene()])
    assert scores["f1"] == 1.0 and scores["exact"] == 1.0 and scores["position_accuracy"] == 1.0


def test_parse_caption_fields() -> None:
    parsed = parse_caption("on a dark grey background: three objects: a large red star to the right of an orange heart")
    assert parsed.background == "dark grey" and parsed.count == 3
    assert [o.shape for o in parsed.objects] == ["star", "heart"]
    assert parsed.objects[1].colour == "orange" and parsed.objects[1].size is None
    assert parsed.relations == [(0, "right of", 1)]


def test_f1_arithmetic() -> None:
    scene = _scene()
    # one right object, one with the wrong size, one extra: tp 1 of 3 predicted, 1 of 2 true
    caption = "a small red circle in the top left, a small blue square in the bottom right and a green star on the left"
    scores = caption_f1([caption], [scene])
    assert scores["precision"] == pytest.approx(1 / 3) and scores["recall"] == pytest.approx(1 / 2)
    assert scores["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert scores["size_accuracy"] == pytest.approx(1 / 2) and scores["shape_accuracy"] == 1.0
    assert scores["count_accuracy"] == 0.0 and scores["exact"] == 0.0
    wrong_relation = score_caption("there is a small red circle to the right of a large blue square", scene)
    assert wrong_relation.true_positives == 0 and wrong_relation.agree["position"] == 0
    unplaced = score_caption("a small red circle and a large blue square", scene)
    assert unplaced.true_positives == 0 and unplaced.agree["shape"] == 2
    repeated = caption_f1(["a small red circle in the top left, a small red circle in the top left"], [scene])
    assert repeated["precision"] == 0.5 and repeated["recall"] == 0.5
    assert caption_f1([""], [scene])["f1"] == 0.0 and caption_f1([""], [scene])["empty"] == 1.0
    with pytest.raises(ValueError, match="one caption per scene"):
        caption_f1(["a"], [])


def test_ground_truth_captions_are_a_ceiling() -> None:
    from viewfinder.pipeline.scenes.captions import all_captions
    from viewfinder.pipeline.scenes.generator import SceneGeneratorConfig, generate_scenes

    scenes = generate_scenes(60, np.random.default_rng(0), SceneGeneratorConfig(seed=0))
    rng = np.random.default_rng(1)
    for template_set, n in (("train", 6), ("test", 3)):
        captions = [(c, s) for s in scenes for c in all_captions(s, template_set, n, rng)]
        scores = caption_f1([c for c, _ in captions], [s for _, s in captions])
        assert scores["f1"] == 1.0 and scores["exact"] == 1.0, template_set


def test_trains_on_a_users_manifest_then_fine_tunes_from_it_with_lora(tmp_path: Path) -> None:
    from PIL import Image
    from safetensors.torch import load_file

    from viewfinder.pipeline.train.captioner import load_captioner_config, train_captioner

    (tmp_path / "images").mkdir()
    colours = {"red": (220, 30, 30), "blue": (30, 60, 230), "green": (30, 200, 60)}
    lines = []
    for i in range(15):
        name = list(colours)[i % 3]
        Image.new("RGB", (40, 40), colours[name]).save(tmp_path / "images" / f"{i}.png")
        lines.append(json.dumps({"path": f"images/{i}.png", "caption": [f"a plain {name} square", f"all {name}"]}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    train = {"steps": 2, "batch_size": 4, "eval_every": 2, "checkpoint_every": 1, "log_every": 1, "eval_images": 3,
             "device": "cpu", "warmup_steps": 1}  # fmt: skip
    full = {"name": "user", "encoder": "tiny-test", "arch": TINY_ARCH, "train": train, "out": str(tmp_path / "full"),
            "dataset": {"path": str(tmp_path / "data.jsonl"), "val_fraction": 0.2}}  # fmt: skip
    (tmp_path / "full.yaml").write_text(json.dumps(full))
    first = train_captioner(load_captioner_config(tmp_path / "full.yaml"), progress=False)
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["train_images"] == 12 and 0.0 <= summary["final_eval"]["val_word_f1"] <= 1.0
    vocab = json.loads((first.model_dir / "vocab.json").read_text())["tokens"]
    assert {"red", "blue", "green", "plain"} <= set(vocab)  # built from the user's captions
    lora = {"name": "user-lora", "train": train, "out": str(tmp_path / "lora"),
            "dataset": {"path": str(tmp_path / "data.jsonl")},
            "init": {"model": str(first.model_dir), "lora": {"r": 2}}}  # fmt: skip
    (tmp_path / "lora.yaml").write_text(json.dumps(lora))
    tuned = train_captioner(load_captioner_config(tmp_path / "lora.yaml"), progress=False)
    before = load_file(str(first.model_dir / "captioner.safetensors"))
    after = load_file(str(tuned.model_dir / "captioner.safetensors"))
    assert set(before) == set(after) and torch.equal(before["query_tokens"], after["query_tokens"])
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"qformer", "lm", "language_projection"}  # adapters merged into both; the projection trains
    assert json.loads((tuned.model_dir / "vocab.json").read_text())["tokens"] == vocab  # the init's vocabulary
    model = load_qformer_captioner(_entry(tuned.model_dir))
    assert len(model.caption(torch.zeros(2, 3, 32, 32), max_new_tokens=4)) == 2
