"""Test helpers: small images, corrupt files, a call-counting encoder wrapper, store invariants."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
FAKE_CHAT_CLASS = "langchain_core.language_models.fake_chat_models.FakeListChatModel"


def write_fake_chat(path: Path, *responses: str) -> Path:
    """A model entry file for langchain-core's fake chat model, which answers ``responses`` in turn."""
    entry = {"family": "langchain_chat", "class_path": FAKE_CHAT_CLASS, "kwargs": {"responses": list(responses)}}
    path.write_text(json.dumps(entry), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------- images
def random_image(rng: np.random.Generator, size: tuple[int, int] | None = None) -> Image.Image:
    """A random RGB picture: a random-colour background, a random gradient and a random block,
    so that even a random encoder gives distinct embeddings."""
    w, h = size or (int(rng.integers(20, 72)), int(rng.integers(20, 72)))
    base = rng.integers(0, 256, size=3)
    gx = np.linspace(0, 1, w)[None, :, None] * rng.integers(-120, 120, size=3)
    gy = np.linspace(0, 1, h)[:, None, None] * rng.integers(-120, 120, size=3)
    pixels = base + gx + gy + rng.normal(0, 12, size=(h, w, 3))
    x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    pixels[y0 : y0 + h // 2, x0 : x0 + w // 2] = rng.integers(0, 256, size=3)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def image_bytes(image: Image.Image, fmt: str = "PNG", **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def write_images(folder: Path, n: int, *, seed: int = 0, prefix: str = "img") -> list[Path]:
    """Write ``n`` images (alternating PNG / JPEG, sizes 20-71 px) named ``{prefix}{i:04d}.png|jpg``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        image = random_image(rng)
        path = folder / (f"{prefix}{i:04d}.png" if i % 2 == 0 else f"{prefix}{i:04d}.jpg")
        if path.suffix == ".png":
            image.save(path, "PNG")
        else:
            image.save(path, "JPEG", quality=92)
        paths.append(path)
    return paths


def write_corrupt_files(folder: Path) -> dict[str, Path]:
    """A truncated JPEG, a zero-byte PNG and a text file named .png."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg = image_bytes(random_image(np.random.default_rng(99), (64, 64)), "JPEG")
    files = {
        "truncated": folder / "broken_truncated.jpg",
        "empty": folder / "broken_empty.png",
        "text": folder / "broken_text.png",
    }
    files["truncated"].write_bytes(jpeg[: len(jpeg) // 2])
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not an image\n")
    return files


# ---------------------------------------------------------------------------------------- encoder
class CountingEncoder:
    """Wraps an encoder and counts what it is asked to embed (everything else is delegated)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.image_calls = 0
        self.images_encoded = 0
        self.text_calls = 0
        self.texts_encoded = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def image_transform(self):  # type: ignore[no-untyped-def]
        return self._inner.image_transform

    def encode_image_tensors(self, pixels):  # type: ignore[no-untyped-def]
        self.image_calls += 1
        self.images_encoded += len(pixels)
        return self._inner.encode_image_tensors(pixels)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.image_calls += 1
        self.images_encoded += len(images)
        return self._inner.encode_images(images)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.text_calls += 1
        self.texts_encoded += len(texts)
        return self._inner.encode_texts(texts)

    @property
    def embedded(self) -> int:
        return self.images_encoded + self.texts_encoded


# ---------------------------------------------------------------------------------------- store
@contextmanager
def ro_connect(index_dir: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to an index's SQLite file (never writes, never creates), closed on exit."""
    db = sqlite3.connect(f"file:{index_dir / 'store.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        yield db
    finally:
        db.close()


def faiss_ids(index: faiss.Index) -> np.ndarray:
    """The int64 ids a store's FAISS index holds (an ``IndexIDMap2``'s map, or an IVF's lists)."""
    from viewfinder.pipeline.store.faiss_index import index_ids

    return index_ids(index)


def check_store_invariants(index_dir: Path, *, check_manifest_file: bool = True) -> dict[str, int]:
    """FAISS ntotal == SQLite items == manifest count; ids and keys unique; FAISS ids == SQLite ids.

    Returns key -> id of the committed items.
    """
    from viewfinder.pipeline.store.index_store import IndexStore

    store = IndexStore.open(index_dir)
    try:
        rows = store.db.execute("SELECT id, key FROM items").fetchall()
        keys = [k for _, k in rows]
        ids = [i for i, _ in rows]
        assert len(set(keys)) == len(keys), "duplicate keys in items"
        assert len(set(ids)) == len(ids), "duplicate ids in items"
        manifest = store.manifest
        assert manifest.count == len(rows), (manifest.count, len(rows))
        index = store.index
        assert index.ntotal == len(rows), (index.ntotal, len(rows))
        if rows:
            assert sorted(faiss_ids(index).tolist()) == sorted(ids)
        if check_manifest_file:
            on_disk = json.loads((index_dir / "manifest.json").read_text())
            assert on_disk["count"] == len(rows)
            assert on_disk["generation"] == manifest.generation
        return {k: i for i, k in rows}
    finally:
        store.close()


def synthetic_store(
    path: Path, vectors: np.ndarray, factory: str, *, target_recall: float = 0.0, delete: Sequence[str] = ()
) -> Any:
    """Add ``vectors`` (keys ``v<id>``) to the index store at ``path`` (created with a made-up encoder)
    and commit with ``factory``; returns the store opened read-only."""
    from viewfinder.pipeline.store.index_store import IndexStore, ItemRow, PendingRow

    with IndexStore.open_for_write(
        path,
        encoder_name="synthetic",
        encoder_fingerprint="synthetic",
        embed_dim=vectors.shape[1],
        modality="image",
        factory=factory,
        source="synthetic",
    ) as store:
        ids = store.allocate_ids(len(vectors))
        rows = [
            PendingRow(ItemRow(i, f"v{i}", f"/v{i}", 0, 0, None, None, {}), v)
            for i, v in zip(ids, vectors, strict=True)
        ]
        for start in range(0, len(rows), 1000):
            store.add_pending(rows[start : start + 1000])
        store.commit(factory=factory, target_recall=target_recall, delete_keys=delete)
    return IndexStore.open(path)


def tiny_index_config(**overrides: Any) -> Any:
    """The ``tiny`` preset's index settings with ``overrides`` (an IndexConfig)."""
    from dataclasses import replace

    from viewfinder.pipeline.stages.presets import load_preset

    return replace(load_preset("tiny").index, **overrides)


# ---------------------------------------------------------------------------------------- scenes
def tiny_scene_index(root: Path, *, seed: int, n_test: int) -> Path:
    """A test-split-only scene benchmark in ``root/scenes`` indexed with the tiny preset into
    ``root/index``; returns the benchmark folder."""
    from viewfinder.pipeline import build_index
    from viewfinder.pipeline.scenes.dataset import ensure_scene_dataset
    from viewfinder.pipeline.scenes.generator import SceneGeneratorConfig

    data = ensure_scene_dataset(
        root / "scenes", SceneGeneratorConfig(seed=seed), n_train=0, n_val=0, n_test=n_test, n_compositional=0
    )
    build_index(data / "test.jsonl", root / "index", preset="tiny", progress=False)
    return data


def save_char_chat_model(folder: Path, *, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A tiny random Llama with a one-character-per-token tokenizer and a chat template, saved as a
    transformers folder (any identifier or caption tokenizes). Its weights start large enough that
    the tied (frozen) embeddings let LoRA make confident predictions within a few steps."""
    import torch
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-:_<>.,; ")
    vocab = {w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *chars])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }};{% endfor %}"
        "{% if add_generation_prompt %}a:{% endif %}"
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, tie_word_embeddings=True, initializer_range=0.5,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
