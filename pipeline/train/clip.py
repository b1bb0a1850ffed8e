"""Contrastive training of a small CLIP from scratch on the scene benchmark.

open_clip builds the model and provides the loss; accelerate places it on a device and handles
precision. The images are preprocessed once with the model's *inference* transform — exactly what
the index sees later — and kept in memory; no crop or flip augmentation, since a flip would turn
"left of" into "right of" and a crop can cut an object away.

The training loop (resume from ``<out>/checkpoint.pt``, learning-rate schedule, ``log.jsonl``,
``summary.json``) is the one every trainer shares, :mod:`.loop`; this module brings the data, the
model and the step.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..config import ConfigError
from ..scenes.twins import TWIN_KINDS
from .data import (
    TrainSplit,
    add_twins,
    batch_texts,
    load_split,
    read_split_records,
    sample_batch,
)
from .loop import BatchStreams, StepOutput, TrainTask, start_run
from .run_config import check_at_least_one, load_run_config

logger = logging.getLogger(__name__)


@dataclass
class SceneDataConfig:
    """Where the training data lives and, if it is missing, how to generate it."""

    root: str = "~/.cache/viewfinder/scenes-64"
    """Scene benchmark folder (generated here when missing)."""
    seed: int = 0
    image_size: int = 64
    n_train: int = 20000
    n_val: int = 1000
    n_test: int = 1000
    n_compositional: int = 1000


@dataclass
class TrainSettings:
    steps: int = 3000
    """Optimizer steps."""
    batch_size: int = 256
    lr: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 0.1
    seed: int = 0
    precision: Literal["no", "fp16", "bf16"] = "no"
    """accelerate mixed precision."""
    threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    eval_every: int = 500
    checkpoint_every: int = 250
    log_every: int = 25
    partial_caption_prob: float = 0.25
    """Share of training pairs whose text describes only part of the scene (one object, some of its
    attributes), so the text tower also learns short queries such as "a star" or "something red"."""
    twin_fraction: float = 0.5
    """Share of each batch made of (scene, twin) pairs: scenes next to a copy changed in one fact
    (shape, colour, size, position, or two colours swapped); 0 trains on random scenes only."""
    n_partial: int = 6
    """Partial descriptions drawn per training image."""
    twin_kinds: list[str] = field(default_factory=lambda: list(TWIN_KINDS))
    """Changes a twin may make, drawn uniformly: reshape, recolour, resize, move, swap_colours,
    swap_sizes, swap_places (every kind by default)."""
    filler_prob: float = 0.5
    """Share of training texts that get random filler words (common words the benchmark never
    uses) inserted, so the text tower learns to read past wording it does not know."""
    max_fillers: int = 3
    """Most filler words inserted into one text."""

    def __post_init__(self) -> None:
        check_at_least_one(self, ("steps", "batch_size", "eval_every", "checkpoint_every", "log_every"))
        if self.lr <= 0:
            raise ConfigError("train: field 'lr' must be > 0")
        for name in ("partial_caption_prob", "twin_fraction", "filler_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"train: field {name!r} must lie in [0, 1]")
        if self.n_partial < 1:
            raise ConfigError("train: field 'n_partial' must be >= 1")
        if not self.twin_kinds or not set(self.twin_kinds) <= set(TWIN_KINDS):
            raise ConfigError(f"train: field 'twin_kinds' must be a non-empty list drawn from {list(TWIN_KINDS)}")
        if self.max_fillers < 0:
            raise ConfigError("train: field 'max_fillers' must be >= 0")


@dataclass
class ClipTrainConfig:
    """A training run: data, architecture, optimisation, outputs."""

    name: str
    arch: str
    """Architecture config in configs/arch (without .json) or a path to an open_clip JSON."""
    data: SceneDataConfig = field(default_factory=SceneDataConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    out: str = "runs/scene-clip"
    """Run folder: checkpoint, logs, the trained model as an open_clip local-dir."""


def load_train_config(path: str | Path) -> ClipTrainConfig:
    """Read a CLIP training config (YAML, or a packaged name in ``configs/train``)."""
    return load_run_config(path, ClipTrainConfig, required=("name", "arch"))


# ---------------------------------------------------------------------------------------- data
def ensure_scene_data(cfg: SceneDataConfig) -> Path:
    """Return the dataset folder, generating it first when missing."""
    from ..scenes.dataset import ensure_scene_dataset
    from ..scenes.generator import SceneGeneratorConfig

    return ensure_scene_dataset(
        Path(cfg.root),
        SceneGeneratorConfig(seed=cfg.seed, image_size=cfg.image_size),
        n_train=cfg.n_train,
        n_val=cfg.n_val,
        n_test=cfg.n_test,
        n_compositional=cfg.n_compositional,
    )


# ------------------------------------------------------------------------------------ training
@torch.inference_mode()
def quick_eval(model: torch.nn.Module, split: TrainSplit, batch: int = 500) -> dict[str, float]:
    """Text-to-image R@1/5 on the split, first caption per image (a training-time signal)."""
    model.eval()
    device = next(model.parameters()).device
    img = torch.cat(
        [
            model.encode_image(split.pixels[i : i + batch].to(device), normalize=True)
            for i in range(0, len(split.ids), batch)
        ]
    )
    txt = torch.cat(
        [
            model.encode_text(split.tokens[i : i + batch, 0].to(device), normalize=True)
            for i in range(0, len(split.ids), batch)
        ]
    )
    sims = txt @ img.T  # (N, N); a split with twins is evaluated over all its images
    ranks = (sims > sims.diag()[:, None]).sum(1) + 1
    model.train()
    return {"val_t2i_R@1": float((ranks <= 1).float().mean()), "val_t2i_R@5": float((ranks <= 5).float().mean())}


@dataclass
class TrainResult:
    out: Path
    model_dir: Path
    steps: int
    seconds: float
    final_eval: dict[str, float]


def train_clip(
    config: ClipTrainConfig,
    *,
    progress: bool | None = None,
    max_steps: int | None = None,
    max_seconds: float | None = None,
) -> TrainResult:
    """Train (or resume) the run described by ``config``; ``max_steps`` stops early (tests),
    ``max_seconds`` once the loop has run that long (the model is exported as it is)."""
    from ...adapters.open_clip_encoder import torch_threads

    benchmark = torch.backends.cudnn.benchmark  # set for the run on a GPU, then the caller's setting again
    try:
        with torch_threads(config.train.threads):
            return _train_clip(config, progress, max_steps, max_seconds)
    finally:
        torch.backends.cudnn.benchmark = benchmark


def _train_clip(
    config: ClipTrainConfig, progress: bool | None, max_steps: int | None, max_seconds: float | None
) -> TrainResult:

    from ...adapters.open_clip_encoder import create_open_clip, pick_device, save_local_dir
    from ..reports import machine_info
    from ..scenes.dataset import INFO_FILE
    from ..scenes.generator import SceneGeneratorConfig
    from ..scenes.graph import Scene
    from .fillers import benchmark_words, filler_token_ids, insert_fillers
    from .losses import MultiPositiveClipLoss

    settings = config.train
    run = start_run(config.out, config, seed=settings.seed, device=pick_device("auto"), precision=settings.precision)

    created = create_open_clip(config.arch, output_dict=True)  # open_clip's model table is left as it was
    model, transform, tokenizer, model_cfg = created.model, created.transform, created.tokenizer, created.arch.config

    root = ensure_scene_data(config.data)
    t_load = time.perf_counter()
    train = load_split(root, "train", transform, tokenizer, settings.seed, settings.n_partial)
    val = load_split(root, "val", transform, tokenizer, settings.seed, settings.n_partial)
    if settings.twin_fraction > 0:
        info = json.loads((root / INFO_FILE).read_text(encoding="utf-8"))
        scenes = [Scene.from_dict(r["scene"]) for r in read_split_records(root, "train")]
        train = add_twins(
            train,
            scenes,
            SceneGeneratorConfig.from_dict(info["generator"]),
            [tuple(pair) for pair in info["held_out_pairs"]],
            transform,
            tokenizer,
            settings.seed,
            settings.n_partial,
            progress,
            kinds=settings.twin_kinds,
        )
    fillers = (
        filler_token_ids(tokenizer, benchmark_words())
        if settings.filler_prob > 0 and settings.max_fillers > 0
        else np.empty(0, dtype=np.int64)
    )
    load_seconds = time.perf_counter() - t_load
    logger.info(
        "loaded %d train (%d twins) / %d val images in %.1fs",
        train.n_base,
        len(train.ids) - train.n_base,
        len(val.ids),
        load_seconds,
    )

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "logit_scale" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "logit_scale" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    loss_fn = MultiPositiveClipLoss()
    device = run.device
    # On an accelerator the images live there for the whole run (2 GB for the benchmark and its twins):
    # copying each batch from host memory took longer than the step.
    pixels = train.pixels.to(device)  # the same tensor on the CPU
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its convolutions once

    def step(model: torch.nn.Module, _: int, streams: BatchStreams) -> StepOutput:
        idx = sample_batch(train, settings.batch_size, settings.twin_fraction, streams.numpy)  # (B,) rows
        texts, positives = batch_texts(train, idx, settings.partial_caption_prob, streams.numpy)  # (B, L), (B, B)
        if len(fillers):
            texts = insert_fillers(
                texts, fillers, settings.filler_prob, settings.max_fillers, tokenizer.eot_token_id, streams.numpy
            )
        images, texts = pixels[idx.to(pixels.device)], texts.to(device)  # (B, 3, H, W), (B, L)
        out = model(images, texts)  # features (B, D) each, logit_scale ()
        return StepOutput(loss_fn(out["image_features"], out["text_features"], out["logit_scale"], positives))

    def clamp_logit_scale(model: torch.nn.Module) -> None:
        model.logit_scale.clamp_(0, math.log(100))

    task = TrainTask(model, optimizer, step, evaluate=lambda m: quick_eval(m, val), after_step=clamp_logit_scale)
    result = run.train(
        task, settings, name=config.name, progress=progress, max_steps=max_steps, max_seconds=max_seconds
    )
    model_dir = run.out / "model"
    if result.export:
        save_local_dir(result.model.to("cpu").float(), model_cfg, model_dir, fp16=False)
        run.write_summary(
            config.name,
            result,
            machine=machine_info(),
            data=str(root),
            train_images=train.n_base,
            train_twins=len(train.ids) - train.n_base,
            load_minutes=load_seconds / 60,
        )
    return TrainResult(run.out, model_dir, result.step, result.seconds, result.last_eval)
