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


class _FakeHFTokenizerModel:
    """Stands in for a transformers tokenizer: one id per word, [CLS] ... [SEP] around them."""

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        words = [100 + i for i, _ in enumerate(text.split())]
        return {"input_ids": [101, *words, 102] if add_special_tokens else words}


class _FakeHFTokenizer:
    """Shaped like open_clip's ``HFTokenizer``: no ``encode``, a ``.tokenizer``, ``clean_fn``, ``tokenizer_mode``."""

    def __init__(self, tokenizer_mode: str = "") -> None:
        self.tokenizer = _FakeHFTokenizerModel()
        self.context_length = 16
        self.tokenizer_mode = tokenizer_mode
        self.clean_fn = lambda text: " ".join(text.split())

    def __call__(self, texts, context_length=None) -> torch.Tensor:
        context_length = context_length or self.context_length
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.tokenizer(self.clean_fn(text))["input_ids"][:context_length]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


class _CallOnlyTokenizer:
    """A tokenizer with only ``__call__(texts, context_length=...)`` (zero-padded), like open_clip's own."""

    context_length = 16

    def __call__(self, texts, context_length=None) -> torch.Tensor:
        context_length = context_length or self.context_length
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [1, *[5] * len(text.split()), 2][:context_length]
            out[row, : len(ids)] = torch.tensor(ids)
        return out


def _encoder_with_tokenizer(tiny_encoder, tokenizer):
    from viewfinder.adapters.open_clip_encoder import OpenClipEncoder

    return OpenClipEncoder(
        tiny_encoder.model, tiny_encoder.image_transform, tokenizer, name="fake-tok", arch_cfg={"embed_dim": 32}
    )


def test_count_tokens_with_a_hugging_face_tokenizer_wrapper(tiny_encoder):
    encoder = _encoder_with_tokenizer(tiny_encoder, _FakeHFTokenizer())
    assert encoder.count_tokens("a red circle") == 5  # [CLS] a red circle [SEP]
    assert encoder.count_tokens("  a   red  ") == 4  # cleaned as the wrapper cleans
    long_text = " ".join(["red"] * 40)
    assert encoder.count_tokens(long_text) == 42 > encoder.context_length
    clips = _encoder_with_tokenizer(tiny_encoder, _FakeHFTokenizer("clips"))
    assert clips.count_tokens("a red circle") == 6  # words, then bos, eos and the class token


def test_count_tokens_with_a_call_only_tokenizer_is_never_zero(tiny_encoder):
    encoder = _encoder_with_tokenizer(tiny_encoder, _CallOnlyTokenizer())
    assert encoder.count_tokens("a red circle") == 5
    assert encoder.count_tokens(" ".join(["red"] * 40)) == 42  # not capped at the context


def test_count_tokens_with_an_unusable_tokenizer_is_an_error(tiny_encoder):
    encoder = _encoder_with_tokenizer(tiny_encoder, lambda texts: torch.zeros(len(texts), 16, dtype=torch.long))
    with pytest.raises(TypeError, match="cannot count tokens"):
        encoder.count_tokens("a red circle")


# ------------------------------------------------------------------------------ global state
def _arch_json(folder, embed_dim: int, context_length: int):
    cfg = json.loads((config_root() / "arch" / "tiny-test.json").read_text())
    cfg["embed_dim"] = embed_dim
    cfg["text_cfg"]["context_length"] = context_length
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps(cfg))
    return folder / "model.json"


def test_arch_files_with_the_same_stem_load_as_different_models(tmp_path, tiny_encoder):
    import open_clip

    registry_before = dict(open_clip.factory._MODEL_CONFIGS)
    first = load_encoder({"name": "a", "arch": str(_arch_json(tmp_path / "a", 16, 12))})
    second = load_encoder({"name": "b", "arch": str(_arch_json(tmp_path / "b", 24, 10))})
    assert (first.embed_dim, first.context_length) == (16, 12)
    assert (second.embed_dim, second.context_length) == (24, 10)
    assert first.encode_texts(["red"]).shape == (1, 16) and second.encode_texts(["red"]).shape == (1, 24)
    # A user's file named like a packaged architecture does not shadow it either.
    mine = tmp_path / "my" / "tiny-test.json"
    _arch_json(tmp_path / "my", 8, 8).rename(mine)
    assert load_encoder({"name": "mine", "arch": str(mine)}).embed_dim == 8
    packaged = load_encoder("tiny-test")
    assert packaged.embed_dim == 32 and packaged.fingerprint == tiny_encoder.fingerprint
    # ... and loading left open_clip's registry as it was.
    assert open_clip.factory._MODEL_CONFIGS == registry_before


def test_create_open_clip_registers_a_json_architecture_only_while_it_creates(tmp_path):
    """What trainers create a model with: a JSON (or packaged) architecture, open_clip's table unchanged."""
    import open_clip

    from viewfinder.adapters.open_clip_encoder import create_open_clip

    registry_before = dict(open_clip.factory._MODEL_CONFIGS)
    torch.manual_seed(0)
    created = create_open_clip(str(_arch_json(tmp_path / "c", 16, 12)), output_dict=True)
    assert created.arch.config["embed_dim"] == 16 and not created.arch.builtin
    assert created.tokenizer(["red"]).shape == (1, 12)
    assert isinstance(created.model(text=created.tokenizer(["red"])), dict)  # kwargs reach open_clip
    assert create_open_clip("tiny-test").arch.config["embed_dim"] == 32  # a packaged architecture by name
    assert open_clip.factory._MODEL_CONFIGS == registry_before
    with pytest.raises(ModelLoadError, match="unknown architecture"):
        create_open_clip("no-such-arch")


def test_loading_and_encoding_leave_torch_threads_alone(probe_images):
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    encoder = load_encoder({"name": "t", "arch": "tiny-test", "threads": wanted})
    assert torch.get_num_threads() == before
    seen: list[int] = []
    encoder.model.visual.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    encoder.encode_images(probe_images)
    encoder.encode_texts(TEXTS)
    assert seen and set(seen) == {wanted}  # the entry's threads apply to the encoder's forward passes
    assert torch.get_num_threads() == before  # ... and only there


def test_loading_random_weights_leaves_the_callers_rng_alone():
    torch.manual_seed(1234)
    load_encoder({"name": "r", "arch": "tiny-test", "weights": "random", "seed": 7})
    after_loading = torch.rand(8)
    torch.manual_seed(1234)
    assert torch.equal(after_loading, torch.rand(8))


def test_fingerprint_is_the_same_in_another_process(tiny_encoder):
    import subprocess
    import sys

    code = "from viewfinder.adapters.registry import load_encoder; print(load_encoder('tiny-test').fingerprint)"
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True) for _ in range(2)]
    assert [run.stdout.strip() for run in runs] == [tiny_encoder.fingerprint] * 2


class _AddressInRepr:
    """A transform step whose repr changes from one object (one process) to the next."""

    def __call__(self, image):
        return image


def _encoder_with_transform(tiny_encoder, transform):
    from viewfinder.adapters.open_clip_encoder import OpenClipEncoder

    return OpenClipEncoder(
        tiny_encoder.model, transform, tiny_encoder.tokenizer, name="t", arch_cfg={"embed_dim": 32}
    ).fingerprint


def test_fingerprint_follows_the_preprocessing_not_its_repr(tiny_encoder):
    from open_clip.transform import image_transform
    from torchvision.transforms import Compose

    def transform(size=32, mean=None, std=None):
        return Compose([_AddressInRepr(), image_transform(size, is_train=False, mean=mean, std=std)])

    assert repr(_AddressInRepr()) != repr(_AddressInRepr())
    base = _encoder_with_transform(tiny_encoder, transform())
    assert _encoder_with_transform(tiny_encoder, transform()) == base
    assert _encoder_with_transform(tiny_encoder, transform(size=48)) != base
    assert _encoder_with_transform(tiny_encoder, transform(mean=(0.5, 0.5, 0.5))) != base
    assert _encoder_with_transform(tiny_encoder, transform(std=(0.5, 0.5, 0.5))) != base


# ------------------------------------------------------------------------------ zoo weights
def test_shipped_zoo_entry_pins_its_weights():
    from viewfinder.adapters.open_clip_encoder import zoo_dir
    from viewfinder.adapters.registry import load_encoder_entry

    entry = load_encoder_entry("scene-clip")
    assert entry.weights == "zoo" and entry.sha256
    assert entry.sha256 == sha256_file(zoo_dir(entry.path) / "open_clip_model.safetensors")


def test_pinned_sha256_of_zoo_weights_is_checked(tmp_path, monkeypatch, seeded_encoder):
    from viewfinder.adapters import open_clip_encoder

    arch_cfg = json.loads((config_root() / "arch" / "tiny-test.json").read_text())
    folder = save_local_dir(seeded_encoder.model, arch_cfg, tmp_path / "zoo" / "tiny-zoo")
    monkeypatch.setattr(open_clip_encoder, "zoo_dir", lambda name: tmp_path / "zoo" / name)
    right = sha256_file(folder / "open_clip_model.safetensors")
    entry = {"name": "z", "weights": "zoo", "path": "tiny-zoo", "sha256": right}
    assert load_encoder(entry).fingerprint == seeded_encoder.fingerprint
    with pytest.raises(ModelLoadError, match="reinstall viewfinder") as info:
        load_encoder({**entry, "sha256": "0" * 64})
    assert "checksum mismatch" in str(info.value) and right in str(info.value)


def test_uint8_pixels_give_the_same_embeddings_as_the_float_transform(tiny_encoder):
    images = [random_image(np.random.default_rng(i), (40, 30)) for i in range(3)]
    assert tiny_encoder.uint8_image_transform is not None
    as_float = tiny_encoder.encode_image_tensors(torch.stack([tiny_encoder.image_transform(im) for im in images]))
    pixels = torch.stack([tiny_encoder.uint8_image_transform(im) for im in images])
    assert pixels.dtype == torch.uint8
    np.testing.assert_allclose(tiny_encoder.encode_image_tensors(pixels), as_float, atol=1e-5)


def test_indexer_workers_hand_over_uint8_pixels(tiny_encoder, make_images, tmp_path):
    from viewfinder.pipeline.store.decode import ImageFiles, collate_decoded
    from viewfinder.pipeline.store.engines import worker_transform
    from viewfinder.pipeline.store.index_store import ItemRow

    paths = make_images(3)
    rows = [ItemRow(i, p.name, str(p), 0, 0, None, None, {}) for i, p in enumerate(paths)]
    batch = collate_decoded([ImageFiles(rows, worker_transform(tiny_encoder), 10**8)[i] for i in range(3)])
    assert batch.pixels is not None and batch.pixels.dtype == torch.uint8 and batch.good == [0, 1, 2]


def test_int8_precision_quantises_the_linear_layers_and_keeps_the_fingerprint(tiny_encoder, make_images):
    from viewfinder.adapters.registry import load_encoder, load_entry

    entry = load_entry({"base": "tiny-test", "precision": "int8"})
    assert entry.name == "tiny-test" and entry.precision == "int8" and entry.arch == "tiny-test"
    int8 = load_encoder(entry)
    assert int8.quantized and not tiny_encoder.quantized
    assert int8.fingerprint == tiny_encoder.fingerprint  # same weights: indexes are shared across precisions
    quantized = [m for m in int8.model.modules() if type(m).__name__ == "Linear" and "quantized" in type(m).__module__]
    assert quantized, "no linear layer was quantised"
    texts = ["a red square", "two small blue circles", "x"]
    cos = (int8.encode_texts(texts) * tiny_encoder.encode_texts(texts)).sum(1)
    assert cos.min() > 0.98
    images = [random_image(np.random.default_rng(i)) for i in range(3)]
    cos = (int8.encode_images(images) * tiny_encoder.encode_images(images)).sum(1)
    assert cos.min() > 0.98
