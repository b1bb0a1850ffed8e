"""Contrastive training of a small CLIP from scratch on the scene benchmark.

open_clip builds the model and provides the loss; accelerate places it on a device and handles
precision. The images are preprocessed once with the model's *inference* transform — exactly what
the index sees later — and kept in memory; no crop or flip augmentation, since a flip would turn
"left of" into "right of" and a crop can cut an object away.

Resumable: ``<out>/checkpoint.pt`` (model, optimizer, step, RNG) is written atomically every
``checkpoint_every`` steps and picked up by the next run with the same config.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..config import ConfigError
from ..scenes.twins import TWIN_KINDS
from ..store.fsutil import atomic_write, atomic_write_json, atomic_write_text
from .data import (
    TrainSplit,
    add_twins,
    batch_texts,
    load_split,
    read_split_records,
    sample_batch,
)
from .run_config import check_at_least_one, load_run_config, warmup_cosine_lr

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
    """Changes a twin may make, drawn uniformly: reshape, recolour, resize, move, swap_colours."""
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
    img = torch.cat(
        [model.encode_image(split.pixels[i : i + batch], normalize=True) for i in range(0, len(split.ids), batch)]
    )
    txt = torch.cat(
        [model.encode_text(split.tokens[i : i + batch, 0], normalize=True) for i in range(0, len(split.ids), batch)]
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


def train_clip(config: ClipTrainConfig, *, progress: bool | None = None, max_steps: int | None = None) -> TrainResult:
    """Train (or resume) the run described by ``config``; ``max_steps`` stops early (tests)."""
    import open_clip
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from ...adapters.open_clip_encoder import _arch_name, _register_packaged_archs, save_local_dir
    from ..progress import progress_bar
    from ..reports import machine_info
    from ..scenes.dataset import INFO_FILE
    from ..scenes.generator import SceneGeneratorConfig
    from ..scenes.graph import Scene
    from .fillers import benchmark_words, filler_token_ids, insert_fillers
    from .losses import MultiPositiveClipLoss

    settings = config.train
    if settings.threads:
        torch.set_num_threads(settings.threads)
    out = Path(config.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "train_config.json", asdict(config))
    accelerator = Accelerator(mixed_precision=settings.precision, cpu=not torch.cuda.is_available())
    set_seed(settings.seed)

    _register_packaged_archs()
    arch = _arch_name(config.arch)
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise ConfigError(f"unknown architecture {config.arch!r}")
    model, _, transform = open_clip.create_model_and_transforms(arch, output_dict=True)
    tokenizer = open_clip.get_tokenizer(arch)

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
    model, optimizer = accelerator.prepare(model, optimizer)
    loss_fn = MultiPositiveClipLoss()

    step, elapsed = 0, 0.0
    ckpt = out / "checkpoint.pt"
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        accelerator.unwrap_model(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = state["step"], state["seconds"]
        torch.set_rng_state(state["torch_rng"])
        logger.info("resumed %s at step %d", ckpt, step)
    generator = np.random.default_rng([settings.seed, step])
    log_fh = (out / "log.jsonl").open("a")
    stop_at = settings.steps if max_steps is None else min(settings.steps, step + max_steps)
    device = accelerator.device
    model.train()
    t_start = time.perf_counter() - elapsed
    last_eval: dict[str, float] = {}
    with progress_bar(f"training {config.name}", settings.steps, "step", progress) as bar:
        bar.advance(step)
        window_t, window_n = time.perf_counter(), 0
        while step < stop_at:
            idx = sample_batch(train, settings.batch_size, settings.twin_fraction, generator)
            texts, positives = batch_texts(train, idx, settings.partial_caption_prob, generator)
            if len(fillers):
                texts = insert_fillers(
                    texts, fillers, settings.filler_prob, settings.max_fillers, tokenizer.eot_token_id, generator
                )
            images, texts = train.pixels[idx].to(device), texts.to(device)
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine_lr(step, settings)
            with accelerator.autocast():
                out_dict = model(images, texts)
                loss = loss_fn(
                    out_dict["image_features"], out_dict["text_features"], out_dict["logit_scale"], positives
                )
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            with torch.no_grad():
                accelerator.unwrap_model(model).logit_scale.clamp_(0, math.log(100))
            step += 1
            window_n += settings.batch_size
            bar.advance(1)
            if step % settings.log_every == 0 or step == stop_at:
                rate = window_n / (time.perf_counter() - window_t)
                record = {
                    "step": step,
                    "loss": float(loss.detach()),
                    "lr": warmup_cosine_lr(step, settings),
                    "samples_per_s": rate,
                }
                bar.describe(f"training {config.name} loss {float(loss.detach()):.3f} {rate:.0f} samples/s")
                window_t, window_n = time.perf_counter(), 0
                if step % settings.eval_every == 0 or step == stop_at:
                    last_eval = quick_eval(accelerator.unwrap_model(model), val)
                    record.update(last_eval)
                    logger.info("step %d: %s", step, record)
                log_fh.write(json.dumps(record) + "\n")
                log_fh.flush()
            if step % settings.checkpoint_every == 0 or step == stop_at:
                state = {
                    "model": accelerator.unwrap_model(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "seconds": time.perf_counter() - t_start,
                    "torch_rng": torch.get_rng_state(),
                }
                atomic_write(ckpt, lambda tmp, state=state: torch.save(state, tmp))
    log_fh.close()
    seconds = time.perf_counter() - t_start
    model_dir = out / "model"
    if step >= settings.steps or max_steps is not None:
        unwrapped = accelerator.unwrap_model(model).to("cpu").float()
        save_local_dir(unwrapped, model_cfg, model_dir, fp16=False)
        summary = {
            "name": config.name,
            "steps": step,
            "train_minutes": seconds / 60,
            "final_eval": last_eval,
            "machine": machine_info(),
            "data": str(root),
            "train_images": train.n_base,
            "train_twins": len(train.ids) - train.n_base,
            "load_minutes": load_seconds / 60,
        }
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return TrainResult(out, model_dir, step, seconds, last_eval)
