"""Training data for the scene CLIP: tensors in memory, partial descriptions, twins, batches.

Images are preprocessed once with the model's *inference* transform — exactly what the index sees
later — and kept in memory; no crop or flip augmentation, since a flip would turn "left of" into
"right of" and a crop can cut an object away.

Each image carries, besides its captions:

* a few *partial descriptions* of one of its objects ("a star", "a red thing in the top left"),
  each with the attributes it names, so the loss knows which other images it also describes;
* the codes of its objects (shape, colour, size, grid cell), to compute those matches;
* optionally a *twin* (:mod:`.scenes.twins`): the same scene changed in one fact, rendered in
  memory, which a batch then holds next to its scene.

The generic nouns of partial training texts ("shape", "thing") differ from those of the benchmark's
partial queries ("object", "something"), so no partial query is phrased exactly like a training text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..scenes.graph import COLOURS, POSITION_PHRASES, POSITIONS, SHAPES, SIZES, Scene, with_article

logger = logging.getLogger(__name__)

ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "size", "position")
"""Order of the attribute codes in :attr:`TrainSplit.objects` and partial-description codes."""
_VOCAB: dict[str, Sequence[str]] = {"shape": SHAPES, "colour": tuple(COLOURS), "size": SIZES, "position": POSITIONS}
MAX_OBJECTS = 3
WILDCARD = -1
"""Attribute code of a partial description that does not name that attribute."""
NO_OBJECT = -2
"""Attribute code of an empty object slot."""

PARTIAL_FORMS: tuple[tuple[str, ...], ...] = (
    ("shape",),
    ("colour",),
    ("size",),
    ("position",),
    ("colour", "shape"),
    ("size", "shape"),
    ("size", "colour"),
    ("shape", "position"),
    ("colour", "position"),
    ("size", "position"),
    ("size", "colour", "shape"),
    ("colour", "shape", "position"),
)
"""Which attributes of one object a partial training text names, drawn uniformly."""
GENERIC_NOUNS: tuple[str, ...] = ("shape", "thing")
"""Nouns for a partial training text that names no shape."""


def object_codes(scene: Scene) -> list[list[int]]:
    """``MAX_OBJECTS`` rows of attribute codes (``NO_OBJECT`` rows pad)."""
    rows = [[_VOCAB[a].index(getattr(obj, a)) for a in ATTRIBUTES] for obj in scene.objects[:MAX_OBJECTS]]
    return rows + [[NO_OBJECT] * len(ATTRIBUTES)] * (MAX_OBJECTS - len(rows))


def partial_description(obj: Any, attributes: Sequence[str], noun: str = "shape") -> tuple[str, list[int]]:
    """A short text naming only ``attributes`` of ``obj``, and its attribute codes."""
    words = [getattr(obj, a) for a in ("size", "colour") if a in attributes]
    phrase = with_article(" ".join([*words, obj.shape if "shape" in attributes else noun]))
    if "position" in attributes:
        phrase += " " + POSITION_PHRASES[obj.position]
    codes = [_VOCAB[a].index(getattr(obj, a)) if a in attributes else WILDCARD for a in ATTRIBUTES]
    return phrase, codes


def partial_descriptions(scene: Scene, rng: np.random.Generator, n: int) -> list[tuple[str, list[int]]]:
    """``n`` random partial descriptions of random objects of ``scene``."""
    out = []
    for _ in range(n):
        obj = scene.objects[int(rng.integers(len(scene.objects)))]
        form = PARTIAL_FORMS[int(rng.integers(len(PARTIAL_FORMS)))]
        out.append(partial_description(obj, form, GENERIC_NOUNS[int(rng.integers(len(GENERIC_NOUNS)))]))
    return out


@dataclass
class TrainSplit:
    """A split in memory. Rows ``n_base:`` are twins of the rows ``twin_of[n_base:]``."""

    ids: list[str]
    pixels: torch.Tensor
    """(N, 3, H, W) float32, preprocessed with the inference transform."""
    tokens: torch.Tensor
    """(N, C, T) int64: C captions per image (repeated where an image has fewer)."""
    n_captions: torch.Tensor
    """(N,) captions available per image."""
    partial_tokens: torch.Tensor
    """(N, P, T) int64: P partial descriptions per image."""
    partial_codes: torch.Tensor
    """(N, P, 4) int64: attribute codes each partial description names (``WILDCARD`` elsewhere)."""
    objects: torch.Tensor
    """(N, MAX_OBJECTS, 4) int64: attribute codes of each image's objects."""
    twin: torch.Tensor
    """(N,) int64: row of the image's twin, -1 when it has none."""
    n_base: int
    """Rows before this one are the split's own images; the rest are twins."""


def build_split(
    ids: list[str],
    images: Iterable[Any],
    captions: list[list[str]],
    scenes: list[Scene],
    transform: Any,
    tokenizer: Any,
    rng: np.random.Generator,
    n_partial: int = 6,
) -> TrainSplit:
    """Tensors for ``ids`` (PIL ``images``, their ``captions`` and ``scenes``), without twins."""
    pixels = torch.stack([transform(image) for image in images])
    max_caps = max(len(c) for c in captions)
    tokens = tokenizer([c[i % len(c)] for c in captions for i in range(max_caps)]).view(len(ids), max_caps, -1)
    partial = [d for scene in scenes for d in partial_descriptions(scene, rng, n_partial)]
    partial_tokens = tokenizer([text for text, _ in partial]).view(len(ids), n_partial, -1)
    partial_codes = torch.tensor([codes for _, codes in partial]).view(len(ids), n_partial, len(ATTRIBUTES))
    return TrainSplit(
        ids=list(ids),
        pixels=pixels,
        tokens=tokens,
        n_captions=torch.tensor([len(c) for c in captions]),
        partial_tokens=partial_tokens,
        partial_codes=partial_codes,
        objects=torch.tensor([object_codes(scene) for scene in scenes]),
        twin=torch.full((len(ids),), -1, dtype=torch.long),
        n_base=len(ids),
    )


def read_split_records(root: Path, split: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (root / f"{split}.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]


def load_split(root: Path, split: str, transform: Any, tokenizer: Any, seed: int = 0, n_partial: int = 6) -> TrainSplit:
    """A split of a scene benchmark folder, read from its manifest and image files."""
    from ..store.images import load_image

    records = read_split_records(root, split)
    return build_split(
        [r["id"] for r in records],
        (load_image(root / r["path"]) for r in records),
        [list(r["caption"]) for r in records],
        [Scene.from_dict(r["scene"]) for r in records],
        transform,
        tokenizer,
        np.random.default_rng([seed, 7]),
        n_partial,
    )


def add_twins(
    split: TrainSplit,
    scenes: list[Scene],
    generator_config: Any,
    forbid_pairs: Sequence[tuple[str, str]],
    transform: Any,
    tokenizer: Any,
    seed: int = 0,
    n_partial: int = 6,
    progress: bool | None = None,
    kinds: Sequence[str] | None = None,
) -> TrainSplit:
    """``split`` with one twin per scene appended (scenes where no twin was found get none).

    Twins are rendered in memory with the benchmark's renderer and render jitter and captioned
    with the training templates; ``scenes`` are the split's scene graphs, in row order. ``kinds``:
    the changes a twin may make (default: every kind in :data:`.scenes.twins.TWIN_KINDS`).
    """
    from ..progress import progress_bar
    from ..scenes.captions import all_captions
    from ..scenes.generator import render_seed
    from ..scenes.render import RenderJitter, render_scene
    from ..scenes.twins import TWIN_KINDS, sample_twin

    rng = np.random.default_rng([seed, 11])
    n_caps = split.tokens.shape[1]
    rows, twins, images, captions = [], [], [], []
    size = split.pixels.shape[-1]
    jitter = RenderJitter(
        max_rotation_deg=generator_config.max_rotation_deg, colour_shift=generator_config.colour_shift
    )
    with progress_bar("rendering twins", len(scenes), "scene", progress) as bar:
        for row, scene in enumerate(scenes):
            twin = sample_twin(
                scene,
                rng,
                generator_config,
                new_id=f"{scene.id}-twin",
                forbid_pairs=forbid_pairs,
                kinds=kinds or TWIN_KINDS,
            )
            bar.advance(1)
            if twin is None:
                continue
            rows.append(row)
            twins.append(twin)
            images.append(render_scene(twin, size, seed=render_seed(generator_config, twin.id), jitter=jitter))
            captions.append(all_captions(twin, "train", n_caps, rng))
    extra = build_split([t.id for t in twins], images, captions, twins, transform, tokenizer, rng, n_partial)
    twin = split.twin.clone()
    twin[torch.tensor(rows, dtype=torch.long)] = torch.arange(len(split.ids), len(split.ids) + len(rows))
    logger.info("rendered %d twins for %d scenes", len(rows), len(scenes))
    return TrainSplit(
        ids=split.ids + extra.ids,
        pixels=torch.cat([split.pixels, extra.pixels]),
        tokens=torch.cat([split.tokens, extra.tokens]),
        n_captions=torch.cat([split.n_captions, extra.n_captions]),
        partial_tokens=torch.cat([split.partial_tokens, extra.partial_tokens]),
        partial_codes=torch.cat([split.partial_codes, extra.partial_codes]),
        objects=torch.cat([split.objects, extra.objects]),
        twin=torch.cat([twin, torch.full((len(rows),), -1, dtype=torch.long)]),
        n_base=split.n_base,
    )


def sample_batch(split: TrainSplit, batch_size: int, twin_fraction: float, rng: np.random.Generator) -> torch.Tensor:
    """Row indices of one batch: ``twin_fraction`` of it scene+twin pairs, the rest random scenes.

    No row appears twice.
    """
    n_base = split.n_base
    has_twin = np.flatnonzero(split.twin[:n_base].numpy() >= 0)
    n_pairs = min(int(batch_size * twin_fraction) // 2, len(has_twin))
    bases = rng.choice(has_twin, n_pairs, replace=False) if n_pairs else np.empty(0, dtype=np.int64)
    n_rest = batch_size - 2 * n_pairs
    if n_rest > n_base - n_pairs:
        raise ValueError(f"batch_size: {batch_size} is larger than the {n_base} training images allow")
    taken = np.zeros(n_base, dtype=bool)
    taken[bases] = True
    candidates = rng.choice(n_base, min(n_base, n_rest + n_pairs), replace=False)
    rest = candidates[~taken[candidates]][:n_rest]
    twins = split.twin[torch.from_numpy(bases)].numpy()
    return torch.from_numpy(np.concatenate([bases, twins, rest]).astype(np.int64))


def batch_texts(
    split: TrainSplit, idx: torch.Tensor, partial_prob: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens of one text per row of ``idx`` (a caption, or a partial description with probability
    ``partial_prob``) and the (B, B) boolean matrix of which texts describe which images."""
    n = len(idx)
    cap = torch.from_numpy(rng.integers(0, 1 << 30, n)) % split.n_captions[idx]
    texts = split.tokens[idx, cap]  # (B, T)
    use_partial = torch.from_numpy(rng.random(n) < partial_prob)
    which = torch.from_numpy(rng.integers(0, split.partial_tokens.shape[1], n))
    texts = torch.where(use_partial[:, None], split.partial_tokens[idx, which], texts)
    codes = split.partial_codes[idx, which]  # (B, 4)
    return texts, describes(codes, use_partial, split.objects[idx])


def describes(codes: torch.Tensor, is_partial: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    """(T, I) bool: whether text t describes image i.

    A full caption (``is_partial`` False) describes only its own image (the same row); a partial
    description with attribute ``codes`` (T, 4) describes every image with an object whose
    attributes equal all the named (non-``WILDCARD``) codes. ``objects`` is (I, MAX_OBJECTS, 4).
    """
    named = codes[:, None, None, :]  # (T, 1, 1, 4)
    equal = (named == WILDCARD) | (named == objects[None])  # (T, I, O, 4)
    present = objects[None, :, :, 0] != NO_OBJECT  # (1, I, O)
    partial_hit = (equal.all(-1) & present).any(-1)  # (T, I)
    own = torch.eye(codes.shape[0], objects.shape[0], dtype=torch.bool)
    return torch.where(is_partial[:, None], partial_hit | own, own)


@torch.inference_mode()
def vision_tokens_of_files(
    clip: torch.nn.Module, transform: Any, paths: list[Path], device: torch.device, desc: str, progress: bool | None
) -> torch.Tensor:
    """(N, tokens, width) float16 frozen CLIP vision tokens of image files, in chunks (never all
    pixels in memory at once)."""
    from ...adapters.frozen_clip import clip_vision_tokens
    from ..progress import progress_bar
    from ..store.images import load_image

    out = []
    chunk = 256
    with progress_bar(desc, len(paths), "image", progress) as bar:
        for lo in range(0, len(paths), chunk):
            pixels = torch.stack([transform(load_image(p)) for p in paths[lo : lo + chunk]])
            out.append(clip_vision_tokens(clip, pixels.to(device)).half().cpu())
            bar.advance(len(pixels))
    return torch.cat(out)
