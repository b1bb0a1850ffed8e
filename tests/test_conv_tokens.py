"""The shared vision-token reader (``adapters/frozen_clip.py``): a ViT tower reads exactly as before
(bit for bit), a ModifiedResNet or timm tower gives a stage's feature map as a token grid with
positions, and a Q-Former reranker and captioner build and run on a conv tower."""

from __future__ import annotations

import hashlib

import pytest
import torch

from viewfinder.adapters.entries import ConfigError, ModelEntry
from viewfinder.adapters.frozen_clip import (
    FrozenClipVision,
    clip_vision_layers,
    clip_vision_tokens,
    clip_vision_width,
    default_vision_stage,
    feature_map_tokens,
    frozen,
    grid_position_code,
    tower_kind,
    vision_layer,
    vision_layers,
)
from viewfinder.adapters.qformer_captioner import (
    CaptionerArch,
    CaptionerHeads,
    CaptionVocab,
    load_qformer_captioner,
    save_captioner_dir,
)
from viewfinder.adapters.qformer_matcher import QFormerArch, QFormerHeads, load_qformer_matcher, save_qformer_dir

RN_ENTRY = {"name": "tiny-test-rn", "arch": "tiny-test-rn", "weights": "random", "seed": 0}
"""configs/arch/tiny-test-rn.json: the smallest open_clip ModifiedResNet (width 4, 64 px)."""

# sha256 of clip_vision_tokens(frozen CLIP, seeded pixels) as float32 bytes, computed with the reader
# as it was before conv towers (commit 3c7ccfe), torch 2.14.1 on the CPU.
VIT_TOKENS_SHA256 = {
    "tiny-test": ((3, 17, 32), 32, "73489408fe49e42c5e31dfecbdf9cfdef6c8dc6c7788ac9af8be539cb87ac8e7"),
}


def _previous_reader(clip: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """``clip_vision_tokens`` verbatim as it was before conv towers (the zoo was trained on it)."""
    visual = clip.visual
    previous = visual.output_tokens
    visual.output_tokens = True
    try:
        pooled, tokens = visual(pixels)
    finally:
        visual.output_tokens = previous
    if pooled.shape[-1] != tokens.shape[-1]:
        pooled = pooled[..., : tokens.shape[-1]]
    return torch.cat([pooled[:, None], tokens], dim=1)


@pytest.fixture(scope="module")
def rn_clip() -> torch.nn.Module:
    from viewfinder.adapters.registry import load_encoder

    return frozen(load_encoder(RN_ENTRY).model)


# ------------------------------------------------------------------------------------------- ViT
@pytest.mark.parametrize("name", sorted(VIT_TOKENS_SHA256))
def test_vit_tokens_are_bit_identical_to_the_previous_reader(name: str) -> None:
    from viewfinder.adapters.registry import load_encoder

    shape, size, digest = VIT_TOKENS_SHA256[name]
    clip = frozen(load_encoder(name).model).eval()
    pixels = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1234))
    with torch.inference_mode():
        tokens = clip_vision_tokens(clip, pixels)
        assert torch.equal(tokens, _previous_reader(clip, pixels))  # on any machine
        assert torch.equal(clip_vision_layers(clip, pixels, ["qformer"])["qformer"], tokens)
    assert tuple(tokens.shape) == shape
    assert hashlib.sha256(tokens.float().contiguous().numpy().tobytes()).hexdigest() == digest  # as before the edit
    assert clip_vision_width(clip) == int(clip.visual.transformer.width) == shape[-1]
    assert default_vision_stage(clip) is None


def test_the_zoo_clip_gives_the_q_former_an_8x8_grid_with_positions() -> None:
    from viewfinder.adapters.registry import load_encoder

    clip = frozen(load_encoder("scene-clip").model).eval()  # the shipped conv tower (scene-clip-rn20)
    assert tower_kind(clip.visual) == "resnet" and default_vision_stage(clip) == "layer2"
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        tokens = clip_vision_tokens(clip, pixels)
    assert tuple(tokens.shape) == (2, 64, clip_vision_width(clip))  # 8 x 8 tokens, no pooled token


def test_vit_layers_by_name(tiny_encoder) -> None:
    clip = frozen(tiny_encoder.model).eval()
    names = [layer.name for layer in vision_layers(clip)]
    assert names == ["stem", "block1"]  # tiny-test: one block
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = clip_vision_layers(clip, pixels, ["stem", "last", "qformer"])
        assert torch.equal(out["last"], clip_vision_tokens(clip, pixels, "block1"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (2, 17, 32) for k in ("stem", "last", "qformer")}
    assert not torch.equal(out["last"], out["qformer"])  # the output tokens pass ln_post and the pooled token
    with pytest.raises(
        ConfigError, match="'layer2' is not in this VisionTransformer tower: one of qformer, last, stem"
    ):
        vision_layer(clip, "layer2")


# ------------------------------------------------------------------------------------ ModifiedResNet
def test_resnet_stages_and_default_stage(rn_clip) -> None:
    assert tower_kind(rn_clip.visual) == "resnet"
    layers = {layer.name: (layer.grid, layer.width) for layer in vision_layers(rn_clip)}
    assert layers == {
        "stem": ((16, 16), 4), "layer1": ((16, 16), 16), "layer2": ((8, 8), 32), "layer3": ((4, 4), 64),
        "layer4": ((2, 2), 128),
    }  # fmt: skip
    assert default_vision_stage(rn_clip) == "layer2"  # the finest grid <= 8 x 8 at 64 px
    assert clip_vision_width(rn_clip) == 32 and clip_vision_width(rn_clip, "layer3") == 64
    assert clip_vision_width(rn_clip, "last") == 128
    with pytest.raises(ConfigError, match="'block1' is not in this ModifiedResNet tower"):
        clip_vision_width(rn_clip, "block1")


def test_resnet_tokens_are_the_stage_grid_with_positions(rn_clip) -> None:
    pixels = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    visual = rn_clip.visual.eval()
    with torch.inference_mode():
        tokens = clip_vision_tokens(rn_clip, pixels)  # (B, 8*8, 32)
        fmap = visual.layer2(visual.layer1(visual.stem(pixels)))  # (B, 32, 8, 8)
        by_name = clip_vision_layers(rn_clip, pixels, ["stem", "qformer", "layer4"])
    assert tokens.shape == (3, 64, 32)
    content = torch.nn.functional.layer_norm(fmap.flatten(2).transpose(1, 2), (32,))  # row-major cells
    torch.testing.assert_close(tokens - content, grid_position_code(8, 8, 32).expand(3, -1, -1))
    assert torch.equal(by_name["qformer"], tokens)
    assert by_name["stem"].shape == (3, 256, 4) and by_name["layer4"].shape == (3, 4, 128)
    features = FrozenClipVision(rn_clip, lambda image: torch.zeros(3, 64, 64))
    assert features.feature_shape == (64, 32)


def test_position_code_tells_rows_and_columns_apart() -> None:
    code = grid_position_code(8, 8, 32)  # (64, 32)
    assert code.shape == (64, 32) and code.abs().max() <= 1
    assert len({tuple(row.tolist()) for row in code}) == 64  # every cell its own code
    grid = code.view(8, 8, 32)
    assert torch.equal(grid[:, 0, :16], grid[:, 5, :16])  # the first half encodes the row only
    assert torch.equal(grid[0, :, 16:], grid[5, :, 16:])  # the second half the column only
    assert grid_position_code(2, 3, 6)[:, 4:].abs().sum() == 0  # channels past 4 * (dim // 4): zero
    blank = feature_map_tokens(torch.zeros(2, 32, 8, 8))
    torch.testing.assert_close(blank, code.expand(2, -1, -1))


def test_measuring_the_stages_leaves_training_mode_and_batch_norm_alone() -> None:
    from viewfinder.adapters.registry import load_encoder

    clip = load_encoder({**RN_ENTRY, "name": "tiny-test-rn-train"}).model.train()
    bn = clip.visual.bn1
    before = bn.running_mean.clone(), bn.num_batches_tracked.clone()
    assert default_vision_stage(clip) == "layer2"
    assert clip.visual.training and bn.training
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.num_batches_tracked, before[1])


# ---------------------------------------------------------------------------- Q-Former on a ResNet
def test_reranker_heads_build_and_run_on_a_resnet_tower(rn_clip, tmp_path) -> None:
    torch.manual_seed(0)
    arch = QFormerArch(
        hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, num_query_tokens=4, embed_dim=16
    )
    heads = QFormerHeads(arch, clip_vision_width(rn_clip), int(rn_clip.transformer.width)).eval()
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        vision = clip_vision_tokens(rn_clip, pixels)  # (2, 64, 32)
        assert heads.image_embeds(vision).shape == (2, 4, 16)
    folder = save_qformer_dir(heads, tmp_path / "reranker", encoder_entry=RN_ENTRY, fp16=False)
    entry = ModelEntry(name="rn-reranker", family="qformer_clip", weights="local-dir", path=str(folder), device="cpu")
    matcher = load_qformer_matcher(entry)  # builds its heads from clip_vision_width
    assert matcher.feature_shape == (64, 32)
    scores = matcher.match(matcher.image_features(pixels), ["a red circle", "a blue square"])
    assert scores.itm.shape == (2,) and ((scores.itm >= 0) & (scores.itm <= 1)).all()


def test_captioner_heads_build_and_run_on_a_resnet_tower(rn_clip, tmp_path) -> None:
    torch.manual_seed(0)
    arch = CaptionerArch(
        qformer_hidden=32, qformer_layers=1, qformer_heads=2, qformer_intermediate=64, num_query_tokens=4,
        lm_hidden=32, lm_layers=1, lm_heads=2, max_caption_tokens=12, dropout=0.0,
    )  # fmt: skip
    vocab = CaptionVocab.build(["a small red circle on the left", "a large blue square at the top"])
    heads = CaptionerHeads(arch, clip_vision_width(rn_clip), vocab).eval()
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        vision = clip_vision_tokens(rn_clip, pixels)
        loss = heads(vision, torch.as_tensor(vocab.encode_batch(["a small red circle on the left"] * 2, 8)))
    assert torch.isfinite(loss)
    folder = save_captioner_dir(heads, vocab, tmp_path / "captioner", encoder_entry=RN_ENTRY)
    entry = ModelEntry(
        name="rn-captioner", family="qformer_clip_captioner", weights="local-dir", path=str(folder), device="cpu"
    )
    captions = load_qformer_captioner(entry).caption(pixels, max_new_tokens=5)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)


# ------------------------------------------------------------------------------------------- timm
def test_a_timm_tower_reads_the_same_way(tmp_path) -> None:
    pytest.importorskip("timm")
    import json

    from viewfinder.adapters.registry import load_encoder

    arch = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "timm_model_name": "test_convnext", "timm_model_pretrained": False,
                       "timm_pool": "avg", "timm_proj": "linear"},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }  # fmt: skip
    (tmp_path / "tiny-timm.json").write_text(json.dumps(arch))
    entry = {"name": "tiny-timm", "arch": str(tmp_path / "tiny-timm.json"), "weights": "random", "seed": 0}
    clip = frozen(load_encoder(entry).model).eval()
    assert tower_kind(clip.visual) == "timm"
    assert [(layer.name, layer.grid) for layer in vision_layers(clip)] == [
        ("stages.0", (16, 16)), ("stages.1", (8, 8)), ("stages.2", (4, 4)), ("stages.3", (2, 2))
    ]  # fmt: skip
    assert default_vision_stage(clip) == "stages.1" and clip_vision_width(clip) == 32
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        tokens = clip_vision_tokens(clip, pixels)
        both = clip_vision_layers(clip, pixels, ["stages.2", "stages.0"])  # asked out of order
        fmap = clip.visual.trunk.forward_intermediates(pixels, indices=[1], intermediates_only=True)[0]
    assert tokens.shape == (2, 64, 32)
    torch.testing.assert_close(tokens, feature_map_tokens(fmap))
    assert both["stages.2"].shape == (2, 16, 48) and both["stages.0"].shape == (2, 256, 24)


def test_reranker_and_captioner_train_on_a_resnet_tower(tmp_path) -> None:
    import json

    from PIL import Image

    from viewfinder.pipeline.train.captioner import load_captioner_config, train_captioner
    from viewfinder.pipeline.train.reranker import load_reranker_config, train_reranker

    (tmp_path / "images").mkdir()
    colours = {"red": (220, 30, 30), "blue": (30, 60, 230), "green": (30, 200, 60)}
    lines = []
    for i in range(12):
        name = list(colours)[i % 3]
        Image.new("RGB", (40, 40), colours[name]).save(tmp_path / "images" / f"{i}.png")
        lines.append(json.dumps({"path": f"images/{i}.png", "caption": [f"a plain {name} square"]}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "rn.yaml").write_text("family: open_clip\narch: tiny-test-rn\nweights: random\nseed: 0\n")
    dataset = {"path": str(tmp_path / "data.jsonl"), "val_fraction": 0.25}
    train = {"steps": 2, "batch_size": 4, "eval_every": 2, "checkpoint_every": 2, "log_every": 1, "eval_images": 3,
             "device": "cpu"}  # fmt: skip
    reranker = {"name": "rn-reranker", "encoder": str(tmp_path / "rn.yaml"), "dataset": dataset, "train": train,
                "out": str(tmp_path / "reranker"), "arch": {"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                "intermediate_size": 64, "num_query_tokens": 4, "embed_dim": 16}}  # fmt: skip
    (tmp_path / "reranker.yaml").write_text(json.dumps(reranker))
    matcher_dir = train_reranker(load_reranker_config(tmp_path / "reranker.yaml"), progress=False).model_dir
    entry = ModelEntry(name="r", family="qformer_clip", weights="local-dir", path=str(matcher_dir), device="cpu")
    assert load_qformer_matcher(entry).feature_shape == (64, 32)
    captioner = {"name": "rn-captioner", "encoder": str(tmp_path / "rn.yaml"), "dataset": dataset,
                 "train": {**train, "warmup_steps": 1}, "out": str(tmp_path / "captioner"),
                 "arch": {"qformer_hidden": 32, "qformer_layers": 1, "qformer_heads": 2, "qformer_intermediate": 64,
                          "num_query_tokens": 4, "lm_hidden": 32, "lm_layers": 1, "lm_heads": 2}}  # fmt: skip
    (tmp_path / "captioner.yaml").write_text(json.dumps(captioner))
    model_dir = train_captioner(load_captioner_config(tmp_path / "captioner.yaml"), progress=False).model_dir
    entry = ModelEntry(
        name="c", family="qformer_clip_captioner", weights="local-dir", path=str(model_dir), device="cpu"
    )
    assert len(load_qformer_captioner(entry).caption(torch.zeros(2, 3, 64, 64), max_new_tokens=4)) == 2
