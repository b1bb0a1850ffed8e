"""A user's own image-text data for the reranker and captioner runs, and starting from a checkpoint.

``dataset`` in a training config replaces the scene benchmark with the user's collection: a JSONL
manifest (one image per line: ``path`` and ``caption``, a string or a list, optionally ``split``)
or a Karpathy-format JSON (``dataset_coco.json``, ``dataset_flickr30k.json``). Validation images
come from the file's ``val_split`` when it has one, else a seeded share of the training images is
held out.

``init`` starts a run from a trained model folder (or a model entry naming one) instead of random
weights: fully (every weight trains) or, with ``lora``, through low-rank adapters (peft) on the
Q-Former's attention and feed-forward layers, merged back into the weights when the run exports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ...adapters.entries import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class DatasetConfig:
    """A user's image-text collection to train on (instead of the scene benchmark)."""

    path: str
    """A JSONL manifest (``path`` + ``caption`` per line) or a Karpathy-format JSON."""
    split: str = "train"
    """Records of this split train (a manifest without ``split`` fields: every record)."""
    val_split: str = "val"
    """Records of this split validate; when the file has none, ``val_fraction`` of the training images do."""
    val_fraction: float = 0.05
    images: str | None = None
    """Image root of a Karpathy JSON (default: its folder)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError("dataset: field 'val_fraction' must lie in (0, 1)")


@dataclass
class ImageTexts:
    """Images (file paths) and each one's captions."""

    ids: list[str]
    paths: list[str]
    captions: list[list[str]]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, rows: np.ndarray) -> ImageTexts:
        return ImageTexts([self.ids[i] for i in rows], [self.paths[i] for i in rows], [self.captions[i] for i in rows])


def _read(config: DatasetConfig, split: str | None) -> ImageTexts:
    from ..eval.retrieval import EvalDataError, load_karpathy, load_manifest

    path = Path(config.path).expanduser()
    if not path.is_file():
        raise ConfigError(f"dataset: {path} not found: give a JSONL manifest or a Karpathy-format JSON")
    try:
        if path.suffix == ".json":
            images = Path(config.images).expanduser() if config.images else None
            found = load_karpathy(path, split or config.split, images)
        else:
            found = load_manifest(path, split)
    except EvalDataError as exc:
        if split is not None and "no captions" in str(exc).lower():
            return ImageTexts([], [], [])
        raise ConfigError(f"dataset: {exc}") from exc
    captions: list[list[str]] = [[] for _ in found.image_keys]
    for text, owner in zip(found.captions, found.caption_image, strict=True):
        captions[owner].append(text)
    keep = [i for i, c in enumerate(captions) if c]
    keys, paths = [found.image_keys[i] for i in keep], [found.image_paths[i] for i in keep]
    return ImageTexts(keys, paths, [captions[i] for i in keep])


def _has_split_field(path: Path) -> bool:
    import json

    if path.suffix == ".json":
        return True
    with path.open(encoding="utf-8") as fh:
        first = next((line for line in fh if line.strip()), "{}")
    try:
        return "split" in json.loads(first)
    except json.JSONDecodeError:
        return False


def load_user_data(config: DatasetConfig) -> tuple[ImageTexts, ImageTexts]:
    """(train, val) images of the user's collection; a clean :class:`ConfigError` when it has none."""
    if not Path(config.path).expanduser().is_file():
        raise ConfigError(f"dataset: {config.path} not found: give a JSONL manifest or a Karpathy-format JSON")
    with_splits = _has_split_field(Path(config.path).expanduser())
    train = _read(config, config.split if with_splits else None)
    val = _read(config, config.val_split) if with_splits else ImageTexts([], [], [])
    if not len(train):
        raise ConfigError(f"dataset: {config.path} has no captioned images in split {config.split!r}")
    if not len(val):
        rng = np.random.default_rng([config.seed, 23])
        order = rng.permutation(len(train))
        n_val = max(1, int(round(config.val_fraction * len(train))))
        if len(train) - n_val < 2:
            raise ConfigError(f"dataset: {config.path} has {len(train)} images: too few to hold out validation ones")
        val, train = train.subset(np.sort(order[:n_val])), train.subset(np.sort(order[n_val:]))
    logger.info("user data %s: %d training and %d validation images", config.path, len(train), len(val))
    return train, val


# ---------------------------------------------------------------------------------------- init + LoRA
@dataclass
class LoraConfig:
    """Low-rank adapters (peft) on the Q-Former's linear layers; everything else stays frozen."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: [
            *("query", "key", "value", "dense"),  # the Q-Former
            *("c_attn", "c_proj", "c_fc"),  # the captioner's GPT-2
            *("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),  # Llama-style LLMs
        ]
    )
    """Names of the layers that get adapters, where a model has them: the Q-Former's attention and
    feed-forward layers, the captioner's GPT-2 and a Llama-style LLM's projections."""
    train_heads: bool = True
    """Also train the small output heads (projections, ITM head / language projection) fully."""

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise ConfigError("lora: fields 'r' and 'alpha' must be >= 1")
        if not self.target_modules:
            raise ConfigError("lora: field 'target_modules' must name at least one layer")


@dataclass
class InitConfig:
    """Where a run starts: a trained model (folder or model entry), fully or through LoRA."""

    model: str
    """A model folder (``qformer_config.json`` / ``captioner_config.json`` inside), or a model entry."""
    lora: LoraConfig | None = None


def with_lora(heads: nn.Module, config: LoraConfig, wrap: tuple[str, ...], head_names: tuple[str, ...]) -> None:
    """Give the submodules ``wrap`` of ``heads`` peft LoRA adapters on their layers named in
    ``config.target_modules`` (in place); freeze every other weight of ``heads`` except the modules
    ``head_names`` (when ``config.train_heads``)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    for p in heads.parameters():
        p.requires_grad_(False)
    wrapped = 0
    for name in wrap:
        module = getattr(heads, name)
        present = sorted({t for t in config.target_modules for n, _ in module.named_modules() if n.split(".")[-1] == t})
        if not present:
            continue
        peft_config = PeftLoraConfig(
            r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=present
        )
        setattr(heads, name, get_peft_model(module, peft_config))
        wrapped += 1
    if not wrapped:
        raise ConfigError(f"lora: no layer named {config.target_modules} in {list(wrap)}")
    if config.train_heads:
        for name in head_names:
            for p in getattr(heads, name).parameters():
                p.requires_grad_(True)
    trainable = sum(p.numel() for p in heads.parameters() if p.requires_grad)
    logger.info("LoRA r=%d on %s: %d trainable parameters", config.r, config.target_modules, trainable)


def init_model_entry(model: str, family: str, config_file: str, kind: str) -> Any:
    """The model entry ``init.model`` names: a trained model folder (it must hold ``config_file``) read
    as a ``local-dir`` entry of ``family``, or a model entry of ``kind`` (packaged name or YAML)."""
    from ...adapters.entries import ModelEntry
    from ...adapters.registry import load_entry

    folder = Path(model).expanduser()
    if folder.is_dir():
        if not (folder / config_file).is_file():
            raise ConfigError(f"init: {folder} is not a {kind} folder (no {config_file})")
        return ModelEntry(name=folder.name, family=family, weights="local-dir", path=str(folder))
    return load_entry(model, kind)  # type: ignore[arg-type]


def merge_lora(heads: nn.Module, wrap: tuple[str, ...]) -> None:
    """Fold LoRA adapters of the submodules ``wrap`` into their weights (plain modules again), in place."""
    for name in wrap:
        module = getattr(heads, name)
        if hasattr(module, "merge_and_unload"):
            setattr(heads, name, module.merge_and_unload())


def trainable_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


__all__ = [
    "DatasetConfig",
    "ImageTexts",
    "InitConfig",
    "init_model_entry",
    "LoraConfig",
    "load_user_data",
    "merge_lora",
    "trainable_parameters",
    "with_lora",
]
