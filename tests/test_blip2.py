"""Stock BLIP-2 adapters (transformers) on tiny checkpoints the tests write and load back.

The checkpoints are saved with ``save_pretrained`` (model + processor) into a temporary folder and
loaded through :func:`load_blip2_matcher` / :func:`load_blip2_captioner` with ``weights: local-dir``:
the same code path a user's hub or local checkpoint takes. No network (HF_HUB_OFFLINE=1, conftest).
"""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest
import torch
from PIL import Image

from viewfinder.adapters.base import ImageCaptioner, ImageTextMatcher, itc_scores
from viewfinder.adapters.blip2_captioner import DECODING_DEFAULTS, load_blip2_captioner
from viewfinder.adapters.blip2_loading import Blip2ImageTransform, weights_sha256
from viewfinder.adapters.blip2_matcher import load_blip2_matcher
from viewfinder.adapters.decoding import check_decoding
from viewfinder.adapters.entries import ModelEntry
from viewfinder.adapters.open_clip_encoder import ModelLoadError

WORDS = "a red blue green yellow circle square triangle star and the of on left right small big photo cat dog".split()
TEXTS = ["a red circle", "the blue square and a green star", "a small dog on the left", "photo"]
N_QUERY = 4


def _images(n: int = 4) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    out = [Image.fromarray(rng.integers(0, 256, (40 + 9 * i, 50 - 3 * i, 3), dtype=np.uint8)) for i in range(n)]
    out[-1] = out[-1].convert("RGBA")  # transparency is composited on white, as the processor does
    return out


def _vision_qformer_configs(vocab_size: int, *, text_input: bool):
    from transformers import Blip2QFormerConfig, Blip2VisionConfig

    vision = Blip2VisionConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        initializer_range=0.02,  # the default 1e-10 makes all images look alike
    )
    qformer = Blip2QFormerConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        encoder_hidden_size=32,  # = the vision width
        cross_attention_frequency=1,
        use_qformer_text_input=text_input,
        vocab_size=vocab_size,
        max_position_embeddings=64,
    )
    return vision, qformer


def _image_processor():
    from transformers import BlipImageProcessor

    return BlipImageProcessor(size={"height": 32, "width": 32})


def _save_matcher(folder, *, image_tokens: bool, seed: int = 0):
    """A tiny Blip2ForImageTextRetrieval + Blip2Processor (BERT word-piece tokenizer) saved to ``folder``."""
    from transformers import BertTokenizer, Blip2Config, Blip2ForImageTextRetrieval, Blip2Processor

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tokenizer = BertTokenizer(vocab=vocab)  # transformers 5 ignores vocab_file= here
    processor = Blip2Processor(_image_processor(), tokenizer, num_query_tokens=N_QUERY if image_tokens else None)
    vision, qformer = _vision_qformer_configs(len(tokenizer), text_input=True)  # len counts the added <image>
    config = Blip2Config(
        vision_config=vision.to_dict(),
        qformer_config=qformer.to_dict(),
        num_query_tokens=N_QUERY,
        image_text_hidden_size=16,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>") if image_tokens else None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Blip2ForImageTextRetrieval(config).eval()
        with torch.no_grad():
            model.query_tokens.normal_(0.0, 0.02)  # transformers initialises them to zeros
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _save_captioner(folder):
    """A tiny Blip2ForConditionalGeneration (OPT) + Blip2Processor (word-level tokenizer) saved to ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        OPTConfig,
        PreTrainedTokenizerFast,
    )

    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", 1)])  # as OPT
    backend.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="</s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    processor = Blip2Processor(_image_processor(), tokenizer, num_query_tokens=N_QUERY)
    vision, qformer = _vision_qformer_configs(len(tokenizer), text_input=False)
    text = OPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        ffn_dim=37,
        max_position_embeddings=64,
        word_embed_proj_dim=32,
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=0,
    )
    config = Blip2Config(
        vision_config=vision.to_dict(),
        qformer_config=qformer.to_dict(),
        text_config=text.to_dict(),
        num_query_tokens=N_QUERY,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Blip2ForConditionalGeneration(config).eval()
        with torch.no_grad():
            model.query_tokens.normal_(0.0, 0.02)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _entry(folder, family: str = "blip2", **fields) -> ModelEntry:
    return ModelEntry(name="tiny-blip2", family=family, weights="local-dir", path=str(folder), device="cpu", **fields)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("blip2")
    return {
        "plain": _save_matcher(root / "plain", image_tokens=False),
        "image-tokens": _save_matcher(root / "image-tokens", image_tokens=True),
        "captioner": _save_captioner(root / "captioner"),
    }


@pytest.fixture(scope="module")
def matcher(folders):
    return load_blip2_matcher(_entry(folders["plain"], batch_size=3))


@pytest.fixture(scope="module")
def captioner(folders):
    return load_blip2_captioner(_entry(folders["captioner"], family="blip2_captioner", batch_size=3))


def _pixels(adapter, images=None) -> torch.Tensor:
    return torch.stack([adapter.image_transform(im) for im in images or _images()])


# ---------------------------------------------------------------------------------------- matcher
def test_matcher_scores_have_the_right_shapes_and_ranges(matcher):
    assert isinstance(matcher, ImageTextMatcher)
    assert matcher.feature_shape == ((32 // 8) ** 2 + 1, 32)
    features = matcher.image_features(_pixels(matcher))
    assert features.shape == (4, *matcher.feature_shape) and features.dtype == torch.float32
    scores = matcher.match(features, TEXTS)
    assert scores.itm.shape == (4,) and scores.itc.shape == (4,)
    assert np.all((scores.itm >= 0) & (scores.itm <= 1))
    assert np.all((scores.itc >= -1) & (scores.itc <= 1))
    assert len(set(np.round(scores.itm, 7))) > 1  # pairs are told apart
    empty = matcher.match(features[:0], [])
    assert empty.itm.shape == (0,) and empty.itc.shape == (0,)


@pytest.mark.parametrize("layout", ["plain", "image-tokens"])
def test_match_from_cached_features_equals_the_models_own_forward(folders, layout):
    """Same pixels: the processor + Blip2ForImageTextRetrieval.forward (ITM head, then ITC) vs
    image_features once + match (with image tokens in the processor's ids or without)."""
    from transformers import AutoProcessor, Blip2ForImageTextRetrieval

    folder = folders[layout]
    model = Blip2ForImageTextRetrieval.from_pretrained(folder, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder)
    inputs = processor(images=_images(), text=TEXTS, padding=True, return_tensors="pt")
    if layout == "image-tokens":
        assert inputs["input_ids"].shape[1] > N_QUERY
        assert bool((inputs["input_ids"][:, :N_QUERY] == model.config.image_token_index).all())
    with torch.inference_mode():
        itm_out = model(**inputs, use_image_text_matching_head=True)
        itc_out = model(**inputs, use_image_text_matching_head=False)
    expected_itm = itm_out.logits_per_image.softmax(dim=-1)[:, 1].numpy()
    expected_itc = itc_out.logits_per_image.diagonal().numpy()  # (images, texts): the pairs are its diagonal

    adapter = load_blip2_matcher(_entry(folder, batch_size=3))  # batches of 3 over 4 pairs
    pixels = _pixels(adapter)
    np.testing.assert_allclose(pixels.numpy(), inputs["pixel_values"].numpy(), atol=1e-5)
    scores = adapter.match(adapter.image_features(pixels), TEXTS)
    np.testing.assert_allclose(scores.itm, expected_itm, atol=1e-4)
    np.testing.assert_allclose(scores.itc, expected_itc, atol=1e-4)
    # and the forward's full ITC matrix column for one text vs one text for all images
    one = adapter.match(adapter.image_features(pixels), [TEXTS[1]])
    np.testing.assert_allclose(one.itc, itc_out.logits_per_image[:, 1].numpy(), atol=1e-4)
    # the split used by the rerank stage (cached ITC embeddings, ITM on a few) gives the same scores
    features = adapter.image_features(pixels)
    split_itc = itc_scores(adapter.image_embeds(features), adapter.text_embeds([TEXTS[1]])[0])
    np.testing.assert_allclose(split_itc, one.itc, atol=1e-4)
    np.testing.assert_allclose(adapter.itm(features, TEXTS[1]), one.itm, atol=1e-4)


def test_one_text_for_all_images_equals_that_text_repeated(matcher):
    features = matcher.image_features(_pixels(matcher))
    one = matcher.match(features, ["a red circle"])
    repeated = matcher.match(features, ["a red circle"] * 4)
    np.testing.assert_allclose(one.itm, repeated.itm, atol=1e-6)
    np.testing.assert_allclose(one.itc, repeated.itc, atol=1e-6)
    per_image = matcher.match(features, TEXTS)
    assert not np.allclose(per_image.itm, one.itm)


def test_the_wrong_number_of_texts_or_feature_shape_is_an_error(matcher):
    features = matcher.image_features(_pixels(matcher))
    with pytest.raises(ValueError, match="one text or one per image"):
        matcher.match(features, TEXTS[:2])
    with pytest.raises(ValueError, match="features must be"):
        matcher.match(features[:, 1:], TEXTS)


def test_image_transform_matches_the_processor_and_pickles(folders, matcher):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(folders["plain"])
    images = _images()
    expected = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    transform = pickle.loads(pickle.dumps(matcher.image_transform))
    assert transform == matcher.image_transform
    np.testing.assert_allclose(torch.stack([transform(im) for im in images]).numpy(), expected.numpy(), atol=1e-5)
    pil = Blip2ImageTransform(**{**transform.describe(), "backend": "pil"})  # the PIL backend, to ~1 grey level
    np.testing.assert_allclose(pil(images[0]).numpy(), expected[0].numpy(), atol=0.1)


def test_fingerprint_is_stable_and_follows_the_weights(folders, matcher, tmp_path):
    again = load_blip2_matcher(_entry(folders["plain"]))
    assert again.fingerprint == matcher.fingerprint
    other = load_blip2_matcher(_entry(_save_matcher(tmp_path / "other", image_tokens=False, seed=1)))
    assert other.fingerprint != matcher.fingerprint


def test_a_pinned_sha256_is_checked(folders):
    folder = folders["plain"]
    good = weights_sha256([folder / "model.safetensors"])
    assert load_blip2_matcher(_entry(folder, sha256=good)).fingerprint
    with pytest.raises(ModelLoadError, match="checksum mismatch"):
        load_blip2_matcher(_entry(folder, sha256="0" * 64))


def test_a_folder_of_another_blip2_class_is_a_clean_error(folders):
    with pytest.raises(ModelLoadError, match="Blip2ForImageTextRetrieval"):
        load_blip2_matcher(_entry(folders["captioner"]))
    with pytest.raises(ModelLoadError, match="Blip2ForConditionalGeneration"):
        load_blip2_captioner(_entry(folders["plain"], family="blip2_captioner"))


@pytest.mark.parametrize("loader", [load_blip2_matcher, load_blip2_captioner], ids=["matcher", "captioner"])
def test_a_missing_folder_is_a_clean_model_load_error(loader, tmp_path):
    with pytest.raises(ModelLoadError) as info:
        loader(_entry(tmp_path / "nowhere"))
    message = str(info.value)
    assert "tiny-blip2" in message and "does not exist" in message
    assert "save_pretrained" in message and "local-dir" in message


@pytest.mark.parametrize("loader", [load_blip2_matcher, load_blip2_captioner], ids=["matcher", "captioner"])
def test_a_hub_id_offline_is_a_quick_clean_model_load_error(loader):
    entry = ModelEntry(name="hub-blip2", family="blip2", weights="hf-hub", path="viewfinder-tests/no-such-blip2")
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        loader(entry)
    assert time.monotonic() - start < 20  # offline: the cache only, no network timeouts
    message = str(info.value)
    assert "hub-blip2" in message and "HF_HUB_OFFLINE" in message
    assert "viewfinder-tests/no-such-blip2" in message and "local-dir" in message


def test_families_are_registered_and_the_packaged_entries_read():
    from viewfinder.adapters.registry import family, load_entry

    assert family("blip2", "matcher").loader.endswith(":load_blip2_matcher")
    assert family("blip2_captioner", "captioner").loader.endswith(":load_blip2_captioner")
    itm = load_entry("blip2-itm-vit-g", "matcher")
    assert (itm.family, itm.weights, itm.path) == ("blip2", "hf-hub", "Salesforce/blip2-itm-vit-g")
    opt = load_entry("blip2-opt-2.7b", "captioner")
    assert (opt.family, opt.weights, opt.path) == ("blip2_captioner", "hf-hub", "Salesforce/blip2-opt-2.7b")


def test_the_registry_loads_a_local_dir_entry(folders):
    from viewfinder.adapters.registry import load_model

    entry = {"name": "tiny", "family": "blip2", "weights": "local-dir", "path": str(folders["plain"]), "device": "cpu"}
    assert isinstance(load_model(entry, "matcher"), ImageTextMatcher)


# -------------------------------------------------------------------------------------- captioner
def test_greedy_captions_are_deterministic_and_independent_of_batching(captioner):
    assert isinstance(captioner, ImageCaptioner)
    pixels = _pixels(captioner)
    first = captioner.caption(pixels, min_new_tokens=3, max_new_tokens=6)  # batches of 3 over 4 images
    assert len(first) == 4 and all(isinstance(c, str) and c for c in first)
    assert captioner.caption(pixels, min_new_tokens=3, max_new_tokens=6) == first
    assert [captioner.caption(p[None], min_new_tokens=3, max_new_tokens=6)[0] for p in pixels] == first
    assert all(len(c.split()) <= 6 for c in first)
    assert captioner.caption(pixels[:0]) == []


def test_beam_search_sampling_and_prompts_run(captioner):
    pixels = _pixels(captioner)
    assert len(captioner.caption(pixels, num_beams=3, max_new_tokens=5)) == 4
    sampled = captioner.caption(pixels, do_sample=True, temperature=0.8, top_p=0.9, max_new_tokens=5, seed=3)
    assert captioner.caption(pixels, do_sample=True, temperature=0.8, top_p=0.9, max_new_tokens=5, seed=3) == sampled
    prompted = captioner.caption(pixels, prompt="a photo of", min_new_tokens=2, max_new_tokens=2)
    assert all(len(c.split()) == 2 for c in prompted)  # the continuation only, not the prompt


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"beams": 3}, "unknown decoding option"),
        ({"num_beams": 0}, "num_beams"),
        ({"temperature": 0.7}, "only when sampling"),
        ({"do_sample": True, "top_p": 1.5}, "top_p"),
        ({"prompt": 3}, "prompt"),
        # the rules every captioner family shares (adapters/decoding.py), checked here too since the split
        ({"do_sample": True, "num_beams": 2}, "not both"),
        ({"min_new_tokens": 5, "max_new_tokens": 4}, "min_new_tokens"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
    ],
)
def test_bad_decoding_options_are_clear_errors(captioner, options, message):
    from viewfinder import Error

    with pytest.raises(Error, match=message):
        check_decoding(options, DECODING_DEFAULTS)
    with pytest.raises(ValueError, match=message):
        check_decoding(options, DECODING_DEFAULTS)
    with pytest.raises(ValueError, match=message):
        captioner.caption(_pixels(captioner)[:1], **options)


def test_a_hub_id_in_the_local_cache_loads_offline(folders, tmp_path, monkeypatch):
    """A hub model cached by an earlier online run loads with HF_HUB_OFFLINE=1, from the cache only."""
    import shutil

    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--viewfinder-tests--tiny-blip2"
    revision = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folders["plain"], repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    entry = ModelEntry(
        name="cached", family="blip2", weights="hf-hub", path="viewfinder-tests/tiny-blip2", device="cpu"
    )
    hub = load_blip2_matcher(entry)
    local = load_blip2_matcher(_entry(folders["plain"]))
    assert hub.fingerprint == local.fingerprint  # same config, preprocessing and weights
    features = local.image_features(_pixels(local))
    np.testing.assert_allclose(hub.match(features, TEXTS).itm, local.match(features, TEXTS).itm, atol=1e-6)
