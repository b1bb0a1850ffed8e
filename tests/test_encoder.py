"""The open_clip encoder adapter: outputs, fingerprints, and checkpoints the tests write themselves
loaded back through the same loaders a user's weights go through (file and local-dir)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from helpers import random_image

from viewfinder.adapters.base import ImageTextEncoder
from viewfinder.adapters.open_clip_encoder import ModelLoadError, save_local_dir, sha256_file
from viewfinder.adapters.registry import load_encoder
from viewfinder.pipeline.config import config_root

TEXTS = ["a red circle", "two blue squares left of a green triangle", "x"]


@pytest.fixture(scope="module")
def probe_images():
    rng = np.random.default_rng(11)
    return [random_image(rng) for _ in range(5)]


@pytest.fixture(scope="module")
def seeded_encoder():
    """A tiny encoder with a seed of its own (its weights are what the checkpoints below save)."""
    return load_encoder({"name": "tiny-ckpt", "arch": "tiny-test", "weights": "random", "seed": 5})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, seeded_encoder):
    """The seeded encoder's weights as a torch .pt state dict, a .safetensors file and a local-dir."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("ckpt")
    state = {k: v.detach().cpu().contiguous() for k, v in seeded_encoder.model.state_dict().items()}
    torch.save(state, folder / "tiny.pt")
    save_file(state, str(folder / "tiny.safetensors"))
    arch_cfg = json.loads((config_root() / "arch" / "tiny-test.json").read_text())
    save_local_dir(seeded_encoder.model, arch_cfg, folder / "local")
    return folder


# ------------------------------------------------------------------------------ outputs
def test_encoder_satisfies_the_protocol(tiny_encoder):
    assert isinstance(tiny_encoder, ImageTextEncoder)
    assert tiny_encoder.name == "tiny-test"
    assert tiny_encoder.embed_dim == 32
    assert tiny_encoder.context_length == 16
    assert isinstance(tiny_encoder.fingerprint, str) and len(tiny_encoder.fingerprint) >= 16


def _assert_unit_rows(vectors: np.ndarray, n: int, dim: int) -> None:
    assert isinstance(vectors, np.ndarray)
    assert vectors.dtype == np.float32
    assert vectors.shape == (n, dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_image_embeddings_are_float32_unit_norm(tiny_encoder, probe_images):
    _assert_unit_rows(tiny_encoder.encode_images(probe_images), len(probe_images), 32)


def test_text_embeddings_are_float32_unit_norm(tiny_encoder):
    _assert_unit_rows(tiny_encoder.encode_texts(TEXTS), len(TEXTS), 32)


def test_empty_inputs_give_empty_matrices(tiny_encoder):
    assert tiny_encoder.encode_images([]).shape == (0, 32)
    assert tiny_encoder.encode_texts([]).shape == (0, 32)


def test_tensor_path_equals_pil_path(tiny_encoder, probe_images):
    pixels = torch.stack([tiny_encoder.image_transform(im) for im in probe_images])  # (B, 3, 32, 32)
    assert pixels.shape == (len(probe_images), 3, 32, 32)
    np.testing.assert_allclose(
        tiny_encoder.encode_image_tensors(pixels), tiny_encoder.encode_images(probe_images), atol=1e-6
    )


def test_batching_does_not_change_embeddings(probe_images):
    one = load_encoder({"name": "b1", "arch": "tiny-test", "batch_size": 1})
    big = load_encoder({"name": "b64", "arch": "tiny-test", "batch_size": 64})
    np.testing.assert_allclose(one.encode_images(probe_images), big.encode_images(probe_images), atol=1e-5)
    np.testing.assert_allclose(one.encode_texts(TEXTS), big.encode_texts(TEXTS), atol=1e-5)


def test_different_inputs_give_different_embeddings(tiny_encoder, probe_images):
    vectors = tiny_encoder.encode_images(probe_images)
    sims = vectors @ vectors.T
    assert (sims[~np.eye(len(vectors), dtype=bool)] < 0.99999).all()


def test_image_transform_is_picklable(tiny_encoder):
    # DataLoader workers receive it by pickling.
    transform = pickle.loads(pickle.dumps(tiny_encoder.image_transform))
    image = random_image(np.random.default_rng(0))
    assert torch.equal(transform(image), tiny_encoder.image_transform(image))


# ------------------------------------------------------------------------------ fingerprints
def test_fingerprint_is_deterministic_for_the_same_seed(tiny_encoder, probe_images):
    again = load_encoder("tiny-test")
    assert again.fingerprint == tiny_encoder.fingerprint
    np.testing.assert_array_equal(again.encode_images(probe_images), tiny_encoder.encode_images(probe_images))


def test_fingerprint_differs_for_another_seed(tiny_encoder, other_encoder, probe_images):
    assert other_encoder.fingerprint != tiny_encoder.fingerprint
    assert not np.allclose(other_encoder.encode_images(probe_images), tiny_encoder.encode_images(probe_images))


def test_fingerprint_ignores_the_entry_name_and_batch_size(tiny_encoder):
    renamed = load_encoder({"name": "renamed", "arch": "tiny-test", "seed": 0, "batch_size": 3})
    assert renamed.fingerprint == tiny_encoder.fingerprint


# ------------------------------------------------------------------------------ checkpoints
def _assert_same_model(loaded, reference, images) -> None:
    assert loaded.fingerprint == reference.fingerprint
    np.testing.assert_array_equal(loaded.encode_images(images), reference.encode_images(images))
    np.testing.assert_array_equal(loaded.encode_texts(TEXTS), reference.encode_texts(TEXTS))


@pytest.mark.parametrize("filename", ["tiny.pt", "tiny.safetensors"])
def test_checkpoint_file_loads_back_identically(checkpoints, seeded_encoder, probe_images, filename):
    path = checkpoints / filename
    loaded = load_encoder({"name": "from-file", "arch": "tiny-test", "weights": "file", "path": str(path)})
    _assert_same_model(loaded, seeded_encoder, probe_images)
    # The seed of a file entry is irrelevant: the weights come from the file.
    reseeded = load_encoder(
        {"name": "from-file", "arch": "tiny-test", "weights": "file", "path": str(path), "seed": 123}
    )
    assert reseeded.fingerprint == seeded_encoder.fingerprint


def test_checkpoint_file_with_arch_given_as_json_path(checkpoints, seeded_encoder, probe_images):
    arch_json = config_root() / "arch" / "tiny-test.json"
    loaded = load_encoder(
        {"name": "f", "arch": str(arch_json), "weights": "file", "path": str(checkpoints / "tiny.safetensors")}
    )
    _assert_same_model(loaded, seeded_encoder, probe_images)


def test_local_dir_loads_back_identically(checkpoints, seeded_encoder, probe_images):
    folder = checkpoints / "local"
    assert (folder / "open_clip_config.json").is_file()
    assert (folder / "open_clip_model.safetensors").is_file()
    loaded = load_encoder({"name": "from-dir", "weights": "local-dir", "path": str(folder)})
    _assert_same_model(loaded, seeded_encoder, probe_images)
    assert loaded.context_length == seeded_encoder.context_length


def test_correct_sha256_is_accepted(checkpoints, seeded_encoder):
    path = checkpoints / "tiny.safetensors"
    entry = {"name": "f", "arch": "tiny-test", "weights": "file", "path": str(path), "sha256": sha256_file(path)}
    assert load_encoder(entry).fingerprint == seeded_encoder.fingerprint


@pytest.mark.parametrize("filename", ["tiny.pt", "tiny.safetensors"])
def test_wrong_sha256_is_a_clear_error(checkpoints, filename):
    path = checkpoints / filename
    wrong = "0" * 64
    with pytest.raises(ModelLoadError) as info:
        load_encoder({"name": "f", "arch": "tiny-test", "weights": "file", "path": str(path), "sha256": wrong})
    message = str(info.value)
    assert "checksum" in message and wrong in message and sha256_file(path) in message and str(path) in message


def test_wrong_sha256_for_local_dir_is_a_clear_error(checkpoints):
    with pytest.raises(ModelLoadError, match="checksum"):
        load_encoder({"name": "d", "weights": "local-dir", "path": str(checkpoints / "local"), "sha256": "f" * 64})


def test_missing_checkpoint_file_is_a_model_load_error(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(ModelLoadError, match="not found") as info:
        load_encoder({"name": "f", "arch": "tiny-test", "weights": "file", "path": str(missing)})
    assert str(missing) in str(info.value)


def test_missing_local_dir_is_a_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="open_clip_config.json"):
        load_encoder({"name": "d", "weights": "local-dir", "path": str(tmp_path / "no-such-folder")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="open_clip_config.json"):
        load_encoder({"name": "d", "weights": "local-dir", "path": str(tmp_path / "empty")})


def test_checkpoint_of_another_architecture_is_a_model_load_error(tmp_path):
    path = tmp_path / "garbage.pt"
    torch.save({"not": torch.zeros(3)}, path)
    with pytest.raises(ModelLoadError, match="could not load encoder"):
        load_encoder({"name": "g", "arch": "tiny-test", "weights": "file", "path": str(path)})


def test_unknown_architecture_is_a_model_load_error():
    with pytest.raises(ModelLoadError, match="unknown architecture"):
        load_encoder({"name": "u", "arch": "no-such-arch", "weights": "random"})
    with pytest.raises(ModelLoadError, match="not found"):
        load_encoder({"name": "u", "arch": "/no/such/arch.json", "weights": "random"})


def test_missing_zoo_model_is_a_model_load_error():
    with pytest.raises(ModelLoadError, match="reinstall"):
        load_encoder({"name": "z", "weights": "zoo", "path": "no-such-zoo-model"})


def test_cuda_requested_without_cuda_is_a_model_load_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ModelLoadError, match="CUDA"):
        load_encoder({"name": "c", "arch": "tiny-test", "device": "cuda"})


# ------------------------------------------------------------------------------ tokens
def test_count_tokens_counts_start_and_end(tiny_encoder):
    assert tiny_encoder.count_tokens("") == 2
    assert tiny_encoder.count_tokens("red") == 3
    assert tiny_encoder.count_tokens("a red circle") == 5


def test_count_tokens_matches_the_tokenizer(tiny_encoder):
    for text in TEXTS:
        tokens = tiny_encoder.tokenizer([text])[0]  # (T,) padded with zeros
        assert tiny_encoder.count_tokens(text) == int((tokens != 0).sum())


def test_count_tokens_is_not_capped_by_the_context(tiny_encoder):
    long_text = " ".join(["red"] * 40)
    assert tiny_encoder.count_tokens(long_text) == 42 > tiny_encoder.context_length
    # ... while encoding it truncates to the context and still works.
    _assert_unit_rows(tiny_encoder.encode_texts([long_text]), 1, 32)
