"""Training the Q-Former reranker (BLIP-2 stage 1) on top of a frozen CLIP.

Objectives, as in BLIP-2: image-text contrast (ITC) over the batch, and image-text matching (ITM)
on positives and on hard negatives mined in the batch by ITC similarity (a hard negative image per
text and a hard negative text per image). On the scene benchmark the batch also holds the hard
cases a dual encoder gets wrong, built from *training* scenes only:

* twins (:mod:`..scenes.twins`): each scene next to a copy changed in one fact, so in-batch mining
  finds the image that differs in one colour, shape, size or position (image-side negatives);
* binding swaps ("a red circle and a blue square" vs "a blue circle and a red square") and
  relation swaps ("A to the left of B" vs "B to the left of A") of the scene, as text-side pairs.

The CLIP is frozen, so its vision tokens are computed once for every training image; only the
Q-Former heads train. ITM's loss weight ramps up over ``itm_warmup_steps`` so that ITC aligns the
queries first; positives and negatives weigh equally in the ITM loss. The loop (resume, schedule,
``log.jsonl``, ``summary.json``) is the one every trainer shares, :mod:`.loop`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ...adapters.entries import ConfigError
from ...adapters.frozen_clip import clip_text_states, clip_vision_tokens, clip_vision_width, frozen
from ...adapters.qformer_matcher import QFormerArch, QFormerHeads, text_mask
from .clip import SceneDataConfig, ensure_scene_data
from .data import TrainSplit, add_twins, batch_texts, load_split, read_split_records, sample_batch
from .loop import BatchStreams, StepOutput, TrainTask, adamw_without_decay_on, start_run
from .losses import soft_cross_entropy
from .run_config import check_at_least_one, load_run_config, saved_encoder_reference
from .user_data import (
    DatasetConfig,
    ImageTexts,
    InitConfig,
    init_model_entry,
    load_user_data,
    merge_lora,
    with_lora,
)

logger = logging.getLogger(__name__)


@dataclass
class RerankerSettings:
    """Optimisation and data mixing of a reranker run."""

    steps: int = 2000
    batch_size: int = 96
    lr: float = 3e-4
    warmup_steps: int = 100
    weight_decay: float = 0.05
    seed: int = 0
    itm_warmup_steps: int = 200
    """ITM's loss weight ramps from 0 to ``itm_weight`` over these steps (ITC aligns first)."""
    itm_weight: float = 1.0
    swap_pairs: bool = True
    """Add each scene's binding- and relation-swap text pairs as ITM positives / negatives."""
    partial_caption_prob: float = 0.2
    twin_fraction: float = 0.5
    n_partial: int = 4
    filler_prob: float = 0.3
    """Share of texts given random filler words (the benchmark never uses them): robustness to wording."""
    max_fillers: int = 3
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = None
    eval_every: int = 250
    checkpoint_every: int = 100
    log_every: int = 20
    eval_images: int = 300
    """Validation images for the quick swap / rerank figures logged during training."""

    def __post_init__(self) -> None:
        check_at_least_one(self, ("steps", "batch_size", "eval_every", "checkpoint_every", "log_every", "n_partial"))
        if self.lr <= 0:
            raise ConfigError("train: field 'lr' must be > 0")
        for name in ("partial_caption_prob", "twin_fraction", "filler_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"train: field {name!r} must lie in [0, 1]")


@dataclass
class RerankerTrainConfig:
    """A reranker training run: the frozen CLIP, the Q-Former architecture, data, optimisation."""

    name: str
    encoder: str = "scene-clip"
    """Model entry of the frozen CLIP (packaged name or YAML path)."""
    arch: QFormerArch = field(default_factory=QFormerArch)
    data: SceneDataConfig = field(default_factory=SceneDataConfig)
    train: RerankerSettings = field(default_factory=RerankerSettings)
    out: str = "runs/scene-reranker"
    dataset: DatasetConfig | None = None
    """A user's own collection (JSONL manifest or Karpathy JSON) to train on instead of the scene
    benchmark ``data`` (no twins or swap pairs then: those are built from scene graphs)."""
    init: InitConfig | None = None
    """Start from a trained reranker (folder or model entry), fully or with LoRA; its architecture
    and CLIP replace ``arch`` and ``encoder``."""


def load_reranker_config(path: str | Path) -> RerankerTrainConfig:
    """Read a reranker training config (YAML, or a packaged name in ``configs/train``)."""
    return load_run_config(path, RerankerTrainConfig)


# ---------------------------------------------------------------------------------------- data
@dataclass
class MatchData:
    """A split in memory for matching: frozen vision tokens, texts, and swap pairs per image."""

    split: TrainSplit
    vision: torch.Tensor
    """(N, tokens, width) float16: the frozen CLIP's vision tokens of every row (twins included)."""
    swap_pos: torch.Tensor
    """(N, S, T) int64 token ids of texts true of the image (S swap pairs per row, zeros where none)."""
    swap_neg: torch.Tensor
    """(N, S, T) the same texts with attributes or arguments swapped: false of the image."""
    n_swaps: torch.Tensor
    """(N,) swap pairs a row has."""


def swap_texts(scenes: list[Any], seed: int) -> dict[str, list[tuple[str, str]]]:
    """Scene id -> its (positive, negative) binding- and relation-swap texts, from those scenes only."""
    from ..scenes.queries import make_binding_swap_queries, make_relation_swap_queries

    rng = np.random.default_rng([seed, 17])
    out: dict[str, list[tuple[str, str]]] = {}
    for q in [*make_binding_swap_queries(scenes, rng), *make_relation_swap_queries(scenes, rng)]:
        out.setdefault(q.image_id, []).append((q.positive, q.negative))
    return out


@torch.inference_mode()
def vision_tokens(clip: torch.nn.Module, pixels: torch.Tensor, device: torch.device, batch: int = 256) -> torch.Tensor:
    """(N, 3, H, W) -> (N, tokens, width) float16 on CPU, computed in batches."""
    out = [
        clip_vision_tokens(clip, pixels[i : i + batch].to(device)).half().cpu() for i in range(0, len(pixels), batch)
    ]
    return torch.cat(out)


def load_match_data(
    root: Path,
    split_name: str,
    encoder: Any,
    settings: RerankerSettings,
    device: torch.device,
    *,
    twins: bool,
    progress: bool | None = None,
) -> MatchData:
    """A scene split with its vision tokens, swap pairs and (``twins``) rendered twins."""
    from ..scenes.dataset import INFO_FILE
    from ..scenes.generator import SceneGeneratorConfig
    from ..scenes.graph import Scene

    transform, tokenizer = encoder.image_transform, encoder.tokenizer
    split = load_split(root, split_name, transform, tokenizer, settings.seed, settings.n_partial)
    scenes = [Scene.from_dict(r["scene"]) for r in read_split_records(root, split_name)]
    if twins and settings.twin_fraction > 0:
        info = json.loads((root / INFO_FILE).read_text(encoding="utf-8"))
        split = add_twins(
            split,
            scenes,
            SceneGeneratorConfig.from_dict(info["generator"]),
            [tuple(pair) for pair in info["held_out_pairs"]],
            transform,
            tokenizer,
            settings.seed,
            settings.n_partial,
            progress,
        )
    pairs = swap_texts(scenes, settings.seed) if settings.swap_pairs else {}
    n_rows, width = len(split.ids), split.tokens.shape[-1]
    n_slots = max((len(v) for v in pairs.values()), default=1)
    swap_pos = torch.zeros(n_rows, n_slots, width, dtype=torch.long)
    swap_neg = torch.zeros_like(swap_pos)
    n_swaps = torch.zeros(n_rows, dtype=torch.long)
    for row, scene_id in enumerate(split.ids[: split.n_base]):
        found = pairs.get(scene_id, [])
        if found:
            swap_pos[row, : len(found)] = tokenizer([p for p, _ in found])
            swap_neg[row, : len(found)] = tokenizer([n for _, n in found])
            n_swaps[row] = len(found)
    vision = vision_tokens(encoder.model, split.pixels, device)
    split.pixels = split.pixels[:0]  # the frozen features replace the pixels
    return MatchData(split, vision, swap_pos, swap_neg, n_swaps)


def user_match_data(images: ImageTexts, encoder: Any, device: torch.device, progress: bool | None) -> MatchData:
    """A user's images for matching: captions, frozen vision tokens; no twins, swaps or partial texts
    (each image's first caption stands in for its partial description)."""
    from .data import MAX_OBJECTS, NO_OBJECT, WILDCARD, vision_tokens_of_files

    n = len(images)
    most = max(len(c) for c in images.captions)
    tokens = encoder.tokenizer([c[i % len(c)] for c in images.captions for i in range(most)]).view(n, most, -1)
    split = TrainSplit(
        ids=list(images.ids),
        pixels=torch.zeros(0),
        tokens=tokens,
        n_captions=torch.tensor([len(c) for c in images.captions]),
        partial_tokens=tokens[:, :1].clone(),
        partial_codes=torch.full((n, 1, 4), WILDCARD, dtype=torch.long),
        objects=torch.full((n, MAX_OBJECTS, 4), NO_OBJECT, dtype=torch.long),
        twin=torch.full((n,), -1, dtype=torch.long),
        n_base=n,
    )
    paths = [Path(p) for p in images.paths]
    vision = vision_tokens_of_files(encoder.model, encoder.image_transform, paths, device, "encoding images", progress)
    empty = torch.zeros(n, 1, tokens.shape[-1], dtype=torch.long)
    return MatchData(split, vision, empty, empty.clone(), torch.zeros(n, dtype=torch.long))


# ---------------------------------------------------------------------------------------- losses
def _trim(ids: torch.Tensor) -> torch.Tensor:
    """Drop the padding columns no text of the batch uses (texts are padded to the context length)."""
    used = int((ids != 0).sum(1).max().item()) if len(ids) else 1
    return ids[:, : max(used, 1)]


def _sample_negatives(sim: torch.Tensor, positives: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """For each row of ``sim`` (R, C), a column drawn in proportion to softmax(sim) among non-positives."""
    weights = sim.detach().float().softmax(dim=1).masked_fill(positives, 0.0).cpu()  # (R, C); sampled on the CPU
    empty = weights.sum(dim=1) <= 0  # a row whose every column is positive: any column will do
    weights[empty] = 1.0
    return torch.multinomial(weights, 1, generator=generator).squeeze(1).to(sim.device)


def itc_loss(sim: torch.Tensor, logit_scale: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Multi-positive contrastive loss on (images, texts) similarities; ``positives`` is (texts, images)."""
    logits = sim * logit_scale.exp().clamp(max=100)  # (I, T)
    return (soft_cross_entropy(logits.T, positives) + soft_cross_entropy(logits, positives.T)) / 2


@dataclass
class StepLosses:
    total: torch.Tensor
    itc: float
    itm: float
    itm_accuracy: float


def step_losses(
    heads: QFormerHeads,
    clip: torch.nn.Module,
    data: MatchData,
    idx: torch.Tensor,
    texts: torch.Tensor,
    positives: torch.Tensor,
    itm_weight: float,
    generator: torch.Generator,
    device: torch.device,
) -> StepLosses:
    """ITC + ITM (in-batch hard negatives + swap pairs) for one batch of rows ``idx`` and their ``texts``."""
    vision = data.vision[idx].to(device, torch.float32)  # (B, N, W)
    ids = _trim(texts).to(device)
    with torch.no_grad():
        states = clip_text_states(clip, ids)  # (B, L, W)
    mask = text_mask(ids)
    positives = positives.to(device)  # (T, I)
    sim = heads.itc_similarity(heads.image_embeds(vision), heads.text_embeds(states, mask))  # (I, T)
    loss_itc = itc_loss(sim, heads.logit_scale, positives)

    batch = len(idx)
    image_rows = [torch.arange(batch, device=device)]  # positives: (image i, text i)
    text_rows = [torch.arange(batch, device=device)]
    labels = [torch.ones(batch, dtype=torch.long, device=device)]
    image_rows.append(_sample_negatives(sim.T, positives, generator))  # a hard negative image per text
    text_rows.append(torch.arange(batch, device=device))
    image_rows.append(torch.arange(batch, device=device))
    text_rows.append(_sample_negatives(sim, positives.T, generator))  # a hard negative text per image
    labels += [torch.zeros(batch, dtype=torch.long, device=device)] * 2
    v_pairs = torch.cat([vision[r] for r in image_rows])
    s_pairs = torch.cat([states[r] for r in text_rows])
    m_pairs = torch.cat([mask[r] for r in text_rows])
    has = torch.nonzero(data.n_swaps[idx] > 0).squeeze(1)
    if len(has):
        slot = (torch.rand(len(has), generator=generator) * data.n_swaps[idx][has]).long()
        rows = idx[has]
        swap_ids = _trim(torch.cat([data.swap_pos[rows, slot], data.swap_neg[rows, slot]])).to(device)
        with torch.no_grad():
            swap_states = clip_text_states(clip, swap_ids)
        width = max(s_pairs.shape[1], swap_states.shape[1])
        s_pairs = torch.cat([_pad(s_pairs, width), _pad(swap_states, width)])
        m_pairs = torch.cat([_pad(m_pairs, width), _pad(text_mask(swap_ids), width)])
        v_pairs = torch.cat([v_pairs, vision[has.to(device)].repeat(2, 1, 1)])
        labels += [torch.ones(len(has), dtype=torch.long, device=device)]
        labels += [torch.zeros(len(has), dtype=torch.long, device=device)]
    label = torch.cat(labels)
    logits = heads.itm_logits(v_pairs, s_pairs, m_pairs)  # (P, 2)
    n_pos = int(label.sum())
    weight = torch.tensor([len(label) / (2 * (len(label) - n_pos)), len(label) / (2 * n_pos)], device=device)
    loss_itm = F.cross_entropy(logits, label, weight=weight)
    accuracy = float((logits.argmax(1) == label).float().mean())
    return StepLosses(loss_itc + itm_weight * loss_itm, float(loss_itc.detach()), float(loss_itm.detach()), accuracy)


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad dim 1 of ``x`` to ``width``."""
    if x.shape[1] == width:
        return x
    pad = [0, 0] * (x.dim() - 2) + [0, width - x.shape[1]]
    return F.pad(x, pad)


# ---------------------------------------------------------------------------------------- eval
@torch.inference_mode()
def quick_eval(heads: QFormerHeads, clip: torch.nn.Module, data: MatchData, device: torch.device) -> dict[str, float]:
    """Validation figures: swap accuracy (ITM + ITC) and rerank R@1 of the first caption among 16
    CLIP-nearest images. A training-time signal; ``viewfinder eval`` gives the real figures."""
    heads.eval()
    n = len(data.split.ids)
    vision = data.vision[:n].to(device, torch.float32)
    ids = data.split.tokens[:n, 0].to(device)
    states, mask = clip_text_states(clip, ids), text_mask(ids)
    img = torch.cat([heads.image_embeds(vision[i : i + 256]) for i in range(0, n, 256)])  # (N, Q, D)
    txt = heads.text_embeds(states, mask)  # (N, D)
    sim = heads.itc_similarity(img, txt).T  # (texts, images)
    top = sim.topk(min(16, n), dim=1).indices  # (N, 16)
    hits = 0
    for t in range(n):
        cand = top[t]
        itm = heads.itm_logits(
            vision[cand], states[t : t + 1].expand(len(cand), -1, -1), mask[t : t + 1].expand(len(cand), -1)
        )
        score = itm.softmax(-1)[:, 1] + sim[t, cand]
        hits += int(cand[score.argmax()] == t)
    correct = total = 0
    for row in torch.nonzero(data.n_swaps[:n] > 0).squeeze(1).tolist():
        pair = torch.stack([data.swap_pos[row, 0], data.swap_neg[row, 0]])
        pair = _trim(pair).to(device)
        s, m = clip_text_states(clip, pair), text_mask(pair)
        v = vision[row : row + 1].expand(2, -1, -1)
        itm = heads.itm_logits(v, s, m).softmax(-1)[:, 1]
        itc = heads.itc_similarity(heads.image_embeds(v[:1]), heads.text_embeds(s, m))[0]
        score = itm + itc
        correct += int(score[0] > score[1])
        total += 1
    heads.train()
    out = {"val_rerank_R@1": hits / n}
    if total:
        out["val_swap_accuracy"] = correct / total
    return out


def _subset(data: MatchData, n: int) -> MatchData:
    keep = min(n, data.split.n_base)
    s = data.split
    split = TrainSplit(
        s.ids[:keep], s.pixels[:0], s.tokens[:keep], s.n_captions[:keep], s.partial_tokens[:keep],
        s.partial_codes[:keep], s.objects[:keep], torch.full((keep,), -1, dtype=torch.long), keep,
    )  # fmt: skip
    return MatchData(split, data.vision[:keep], data.swap_pos[:keep], data.swap_neg[:keep], data.n_swaps[:keep])


# ---------------------------------------------------------------------------------------- loop
@dataclass
class RerankerResult:
    out: Path
    model_dir: Path
    steps: int
    seconds: float
    final_eval: dict[str, float]


def train_reranker(
    config: RerankerTrainConfig,
    *,
    progress: bool | None = None,
    max_steps: int | None = None,
    max_seconds: float | None = None,
) -> RerankerResult:
    """Train (or resume) the reranker run ``config`` describes.

    ``max_steps`` stops early (tests); ``max_seconds`` stops once the loop has run that long (a
    time-boxed run: the model is exported as it is and the summary says how many steps it had).
    """
    from ...adapters.open_clip_encoder import torch_threads

    with torch_threads(config.train.threads):
        return _train_reranker(config, progress, max_steps, max_seconds)


def _train_reranker(
    config: RerankerTrainConfig, progress: bool | None, max_steps: int | None, max_seconds: float | None
) -> RerankerResult:
    from ...adapters.open_clip_encoder import pick_device
    from ...adapters.qformer_matcher import save_qformer_dir
    from ...adapters.registry import load_encoder
    from ..reports import machine_info
    from .fillers import benchmark_words, filler_token_ids, insert_fillers

    s = config.train
    run = start_run(config.out, config, seed=s.seed, device=pick_device(s.device))
    device = run.device
    init_arch, encoder_ref, init_state = config.arch, config.encoder, None
    if config.init is not None:
        from ...adapters.qformer_matcher import CONFIG_FILE, read_qformer_dir

        entry = init_model_entry(config.init.model, "qformer_clip", CONFIG_FILE, "matcher")
        init_arch, encoder_ref, init_state = read_qformer_dir(entry)
        logger.info("starting from %s (its architecture and CLIP)", config.init.model)
    encoder = load_encoder(encoder_ref)
    clip = frozen(encoder.model).to(device).eval()
    t_load = time.perf_counter()
    if config.dataset is not None:
        user_train, user_val = load_user_data(config.dataset)
        root = Path(config.dataset.path).expanduser()
        train = user_match_data(user_train, encoder, device, progress)
        val = _subset(user_match_data(user_val, encoder, device, progress), s.eval_images)
    else:
        root = ensure_scene_data(config.data)
        train = load_match_data(root, "train", encoder, s, device, twins=True, progress=progress)
        val = _subset(load_match_data(root, "val", encoder, s, device, twins=False), s.eval_images)
    load_seconds = time.perf_counter() - t_load
    logger.info("loaded %d training rows (%d base) in %.1fs", len(train.split.ids), train.split.n_base, load_seconds)
    fillers = (
        filler_token_ids(encoder.tokenizer, benchmark_words())
        if s.filler_prob > 0 and s.max_fillers > 0 and config.dataset is None  # benchmark words: scenes only
        else np.empty(0, dtype=np.int64)
    )
    heads = QFormerHeads(init_arch, clip_vision_width(clip), int(clip.transformer.width))
    if init_state is not None:
        heads.load_state_dict(init_state)
    if config.init is not None and config.init.lora is not None:
        head_names = ("vision_projection", "text_projection", "itm_head")
        with_lora(heads, config.init.lora, ("qformer",), head_names)
    heads = heads.to(device)
    optimizer = adamw_without_decay_on(heads, s.lr, s.weight_decay, "query_tokens")

    def step(model: torch.nn.Module, index: int, streams: BatchStreams) -> StepOutput:
        idx = sample_batch(train.split, s.batch_size, s.twin_fraction, streams.numpy)  # (B,) rows
        texts, positives = batch_texts(train.split, idx, s.partial_caption_prob, streams.numpy)  # (B, L), (B, B)
        if len(fillers):
            texts = insert_fillers(
                texts, fillers, s.filler_prob, s.max_fillers, encoder.tokenizer.eot_token_id, streams.numpy
            )
        itm_weight = s.itm_weight * min(1.0, index / max(1, s.itm_warmup_steps))
        losses = step_losses(model, clip, train, idx, texts, positives, itm_weight, streams.torch, device)
        metrics = {"itc": losses.itc, "itm": losses.itm, "itm_accuracy": losses.itm_accuracy}
        return StepOutput(losses.total, metrics)

    task = TrainTask(heads, optimizer, step, evaluate=lambda model: quick_eval(model, clip, val, device), grad_clip=1.0)
    result = run.train(task, s, name=config.name, progress=progress, max_steps=max_steps, max_seconds=max_seconds)
    model_dir = run.out / "model"
    if result.export:
        heads = result.model
        merge_lora(heads, ("qformer",))  # LoRA adapters folded into the weights
        ref = saved_encoder_reference(encoder_ref)
        save_qformer_dir(heads.to("cpu").float(), model_dir, encoder_entry=ref, fp16=False)
        run.write_summary(
            config.name, result,
            machine=machine_info(), data=str(root), train_rows=len(train.split.ids),
            load_minutes=load_seconds / 60, device=str(device),
            init=config.init.model if config.init else None, lora=bool(config.init and config.init.lora),
        )  # fmt: skip
    return RerankerResult(run.out, model_dir, result.step, result.seconds, result.last_eval)
