"""Training the scene captioner (BLIP-2 ``Blip2ForConditionalGeneration``'s shape) on a frozen CLIP.

The CLIP is frozen, so its vision tokens are computed once for every image; the Q-Former, the
language projection and the small causal LM (:mod:`...adapters.qformer_captioner`) train together
with next-token cross-entropy on the caption tokens. Each training image contributes every one of
its captions (the manifest's ``caption`` list: training templates only); a batch draws images at
random and one of each image's captions. Only the train split is read for training, the val split
for the quick evaluation; never test or compositional (their templates stay unseen).

The word-level vocabulary is built from the training captions (deterministic: sorted words).

The loop is the one every trainer shares (:mod:`.loop`): resumable from ``<out>/checkpoint.pt``
(model, optimizer, step, RNG and, here, the vocabulary, which must match on resume). ``log.jsonl``
gets the loss every ``log_every`` steps and, every ``eval_every``, the quick evaluation: greedy
captions of ``eval_images`` val images scored with :func:`..eval.captions.caption_f1` (object-level
F1 against the scene graph, next to the F1 of the val images' own captions, the ceiling).
The end of a run writes ``<out>/model/`` (a ``qformer_clip_captioner`` local-dir folder) and
``<out>/summary.json``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ...adapters.entries import ConfigError
from ...adapters.frozen_clip import clip_vision_width, frozen
from ...adapters.qformer_captioner import CaptionerArch, CaptionerHeads, CaptionVocab, Decoding, generate_ids
from .clip import SceneDataConfig, ensure_scene_data
from .data import read_split_records, vision_tokens_of_files
from .loop import BatchStreams, StepOutput, TrainTask, adamw_without_decay_on, start_run
from .run_config import check_at_least_one, load_run_config, saved_encoder_reference
from .user_data import (
    DatasetConfig,
    InitConfig,
    init_model_entry,
    load_user_data,
    merge_lora,
    with_lora,
)

logger = logging.getLogger(__name__)


@dataclass
class CaptionerSettings:
    """Optimisation of a captioner run."""

    steps: int = 4000
    batch_size: int = 128
    lr: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 0.05
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    eval_every: int = 500
    checkpoint_every: int = 100
    log_every: int = 20
    eval_images: int = 300
    """Validation images captioned (greedy) for the quick F1 logged during training."""

    def __post_init__(self) -> None:
        check_at_least_one(self, ("steps", "batch_size", "eval_every", "checkpoint_every", "log_every", "eval_images"))
        if self.lr <= 0:
            raise ConfigError("train: field 'lr' must be > 0")
        if self.warmup_steps < 0:
            raise ConfigError("train: field 'warmup_steps' must be >= 0")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("train: field 'threads' must be >= 1 or null")


@dataclass
class CaptionerTrainConfig:
    """A captioner training run: the frozen CLIP, the captioner architecture, data, optimisation."""

    name: str
    encoder: str = "scene-clip"
    """Model entry of the frozen CLIP (packaged name or YAML path)."""
    arch: CaptionerArch = field(default_factory=CaptionerArch)
    data: SceneDataConfig = field(default_factory=SceneDataConfig)
    train: CaptionerSettings = field(default_factory=CaptionerSettings)
    out: str = "runs/scene-captioner"
    dataset: DatasetConfig | None = None
    """A user's own collection (JSONL manifest or Karpathy JSON) to train on instead of the scene
    benchmark ``data``; the quick evaluation is then word F1 against the val images' captions."""
    init: InitConfig | None = None
    """Start from a trained captioner (folder or model entry), fully or with LoRA; its architecture,
    vocabulary and CLIP replace ``arch`` and ``encoder``."""


def load_captioner_config(path: str | Path) -> CaptionerTrainConfig:
    """Read a captioner training config (YAML, or a packaged name in ``configs/train``)."""
    return load_run_config(path, CaptionerTrainConfig)


# ---------------------------------------------------------------------------------------- data
@dataclass
class CaptionData:
    """A split in memory for captioning: frozen vision tokens, tokenised captions, scene graphs."""

    ids: list[str]
    vision: torch.Tensor
    """(N, tokens, width) float16: the frozen CLIP's vision tokens of every image."""
    captions: list[list[str]]
    scenes: list[Any]
    tokens: torch.Tensor | None = None
    """(N, C, L) int64 ``[BOS] words [EOS] [PAD]...`` per caption (repeated where an image has fewer)."""
    n_captions: torch.Tensor | None = None
    """(N,) captions each image has."""


def load_caption_data(
    root: Path,
    split: str,
    clip: torch.nn.Module,
    transform: Any,
    device: torch.device,
    *,
    limit: int | None = None,
    progress: bool | None = None,
) -> CaptionData:
    """The first ``limit`` images of a scene split (all by default), with their vision tokens."""
    from ..scenes.graph import Scene

    records = read_split_records(root, split)[:limit]
    if not records:
        raise ConfigError(f"{root}: split {split!r} has no images")
    paths = [root / r["path"] for r in records]
    vision = vision_tokens_of_files(clip, transform, paths, device, f"encoding {split}", progress)
    return CaptionData(
        ids=[r["id"] for r in records],
        vision=vision,
        captions=[list(r["caption"]) for r in records],
        scenes=[Scene.from_dict(r["scene"]) for r in records],
    )


def _user_caption_data(
    images: Any, clip: torch.nn.Module, transform: Any, device: torch.device, desc: str, progress: bool | None
) -> CaptionData:
    """A user's images (:class:`.user_data.ImageTexts`) with their vision tokens; no scene graphs."""
    paths = [Path(p) for p in images.paths]
    vision = vision_tokens_of_files(clip, transform, paths, device, desc, progress)
    return CaptionData(list(images.ids), vision, list(images.captions), [])


def tokenise_captions(data: CaptionData, vocab: CaptionVocab, length: int) -> int:
    """Fill ``data.tokens`` / ``data.n_captions``; returns how many captions were cut to ``length``."""
    most = max(len(c) for c in data.captions)
    flat = [c[i % len(c)] for c in data.captions for i in range(most)]
    data.tokens = vocab.encode_batch(flat, length).view(len(data.ids), most, length)
    data.n_captions = torch.tensor([len(c) for c in data.captions])
    return sum(len(vocab.encode(c)) + 2 > length for caps in data.captions for c in caps)


def sample_captions(data: CaptionData, batch_size: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random images and one random caption of each: (B,) rows, (B, L) ids trimmed of
    padding columns no caption of the batch uses."""
    assert data.tokens is not None and data.n_captions is not None
    rows = torch.from_numpy(rng.integers(0, len(data.ids), size=batch_size))
    which = torch.from_numpy(rng.random(batch_size)) * data.n_captions[rows]
    ids = data.tokens[rows, which.long()]
    used = int((ids != 0).sum(1).max()) if batch_size else 1  # [PAD] is id 0
    return rows, ids[:, : max(used, 2)]


# ---------------------------------------------------------------------------------------- eval
@torch.inference_mode()
def caption_vision(heads: CaptionerHeads, vocab: CaptionVocab, vision: torch.Tensor, device: torch.device) -> list[str]:
    """Greedy captions of vision tokens, in batches."""
    was_training = heads.training
    heads.eval()
    options = Decoding(max_new_tokens=heads.arch.max_caption_tokens)
    out: list[str] = []
    for lo in range(0, len(vision), 256):
        ids = generate_ids(heads, vision[lo : lo + 256].to(device, torch.float32), options)
        out.extend(vocab.decode(row) for row in ids.tolist())
    heads.train(was_training)
    return out


def quick_eval(heads: CaptionerHeads, vocab: CaptionVocab, val: CaptionData, device: torch.device) -> dict[str, Any]:
    """Object-level F1 (and per-attribute accuracy) of greedy captions of the val images (a user's
    collection: word F1 against their captions), and the captions/s of that greedy decoding
    (vision tokens given). A training-time signal."""
    from ..eval.captions import caption_f1, word_f1

    t = time.perf_counter()
    captions = caption_vision(heads, vocab, val.vision, device)
    seconds = time.perf_counter() - t
    if val.scenes:
        scores = caption_f1(captions, val.scenes)
        out: dict[str, Any] = {f"val_{k}": v for k, v in scores.items() if k not in ("n_captions",)}
    else:  # a user's collection: no scene graphs to parse captions against
        out = {"val_word_f1": word_f1(captions, val.captions)}
    out["val_captions_per_s"] = len(captions) / seconds if seconds > 0 else 0.0
    out["val_examples"] = [
        {"id": i, "caption": c, "truth": t[0]}
        for i, c, t in zip(val.ids[:3], captions[:3], val.captions[:3], strict=True)
    ]
    return out


# ---------------------------------------------------------------------------------------- loop
@dataclass
class CaptionerResult:
    out: Path
    model_dir: Path
    steps: int
    seconds: float
    final_eval: dict[str, Any]


LORA_WRAP = ("qformer", "lm")
"""Submodules of the captioner that LoRA adapts (the Q-Former and the language model)."""


def train_captioner(
    config: CaptionerTrainConfig,
    *,
    progress: bool | None = None,
    max_steps: int | None = None,
    max_seconds: float | None = None,
) -> CaptionerResult:
    """Train (or resume) the captioner run ``config`` describes; ``max_steps`` stops early (tests),
    ``max_seconds`` once the loop has run that long (the model is exported as it is)."""
    from ...adapters.open_clip_encoder import torch_threads

    with torch_threads(config.train.threads):
        return _train_captioner(config, progress, max_steps, max_seconds)


def _train_captioner(
    config: CaptionerTrainConfig, progress: bool | None, max_steps: int | None, max_seconds: float | None
) -> CaptionerResult:
    from ...adapters.open_clip_encoder import pick_device
    from ...adapters.qformer_captioner import save_captioner_dir
    from ...adapters.registry import load_encoder
    from ..eval.captions import caption_f1, word_f1
    from ..reports import machine_info

    s = config.train
    run = start_run(config.out, config, seed=s.seed, device=pick_device(s.device))
    device = run.device
    arch, encoder_ref, init_vocab, init_state = config.arch, config.encoder, None, None
    if config.init is not None:
        from ...adapters.qformer_captioner import CONFIG_FILE, read_captioner_dir

        entry = init_model_entry(config.init.model, "qformer_clip_captioner", CONFIG_FILE, "captioner")
        arch, encoder_ref, init_vocab, init_state = read_captioner_dir(entry)
        logger.info("starting from %s (its architecture, vocabulary and CLIP)", config.init.model)
    encoder = load_encoder(encoder_ref)
    clip = frozen(encoder.model).to(device).eval()
    t_load = time.perf_counter()
    transform = encoder.image_transform
    if config.dataset is not None:
        root = Path(config.dataset.path).expanduser()
        user_train, user_val = load_user_data(config.dataset)
        first_val = user_val.subset(np.arange(min(len(user_val), s.eval_images)))
        train = _user_caption_data(user_train, clip, transform, device, "encoding images", progress)
        val = _user_caption_data(first_val, clip, transform, device, "encoding val images", progress)
    else:
        root = ensure_scene_data(config.data)
        train = load_caption_data(root, "train", clip, transform, device, progress=progress)
        val = load_caption_data(root, "val", clip, transform, device, limit=s.eval_images, progress=progress)
    vocab = init_vocab or CaptionVocab.build(c for caps in train.captions for c in caps)
    cut = tokenise_captions(train, vocab, arch.max_caption_tokens + 1)
    if cut:
        logger.warning("%d training captions are longer than max_caption_tokens: cut", cut)
    load_seconds = time.perf_counter() - t_load
    if val.scenes:
        reference = caption_f1([c[0] for c in val.captions], val.scenes)["f1"]
    else:  # one reference caption against the others (1.0 where an image has only one)
        reference = word_f1([c[0] for c in val.captions], [c[1:] or c for c in val.captions])
    logger.info(
        "loaded %d training images (%d captions, vocabulary %d) and %d val images in %.1fs",
        len(train.ids), sum(len(c) for c in train.captions), len(vocab), len(val.ids), load_seconds,
    )  # fmt: skip

    heads = CaptionerHeads(arch, clip_vision_width(clip), vocab)
    if init_state is not None:
        heads.load_state_dict(init_state)
    if config.init is not None and config.init.lora is not None:
        with_lora(heads, config.init.lora, LORA_WRAP, ("language_projection",))
    heads = heads.to(device)
    optimizer = adamw_without_decay_on(heads, s.lr, s.weight_decay, "query_tokens")
    vision = train.vision.to(device) if device.type == "cuda" else train.vision  # (N, tokens, width) float16

    def step(model: torch.nn.Module, _: int, streams: BatchStreams) -> StepOutput:
        rows, ids = sample_captions(train, s.batch_size, streams.numpy)  # (B,), (B, L)
        batch_vision = vision[rows.to(vision.device)].to(device, torch.float32)  # (B, tokens, width)
        return StepOutput(model(batch_vision, ids.to(device)))

    task = TrainTask(
        heads,
        optimizer,
        step,
        evaluate=lambda model: quick_eval(model, vocab, val, device),
        grad_clip=1.0,
        checkpoint_extra={"vocab": vocab.tokens},
        eval_fields={"val_reference_f1": reference},
    )
    result = run.train(task, s, name=config.name, progress=progress, max_steps=max_steps, max_seconds=max_seconds)
    model_dir = run.out / "model"
    if result.export:
        heads = result.model
        if not result.last_eval:
            result.last_eval = quick_eval(heads, vocab, val, device)
        merge_lora(heads, LORA_WRAP)  # LoRA adapters folded into the weights
        ref = saved_encoder_reference(encoder_ref)
        save_captioner_dir(heads.to("cpu").float(), vocab, model_dir, encoder_entry=ref)
        run.write_summary(
            config.name, result,
            val_reference_f1=reference, machine=machine_info(), data=str(root),
            train_images=len(train.ids), train_captions=sum(len(c) for c in train.captions),
            vocab_size=len(vocab), parameters=sum(p.numel() for p in heads.parameters()),
            samples_per_s=float(np.median(result.rates)) if result.rates else None,
            load_minutes=load_seconds / 60, device=str(device),
            init=config.init.model if config.init else None, lora=bool(config.init and config.init.lora),
        )  # fmt: skip
    return CaptionerResult(run.out, model_dir, result.step, result.seconds, result.last_eval)


__all__ = [
    "CaptionData",
    "CaptionerResult",
    "CaptionerSettings",
    "CaptionerTrainConfig",
    "load_caption_data",
    "load_captioner_config",
    "quick_eval",
    "train_captioner",
]
