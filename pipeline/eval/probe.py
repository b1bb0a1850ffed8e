"""The shape probe: how much of "which shapes does this scene hold" a vision tower's tokens carry.

The Q-Former reranker and captioner see the scenes only through the frozen CLIP's vision tokens, so
what those tokens miss, every stage built on them misses. For each encoder entry (a packaged name,
a YAML entry, a trained model folder) this reads the tokens through the shared reader
(:func:`...adapters.frozen_clip.clip_vision_layers`) at the layers asked (the stem, each block or
stage, ``qformer``: what the Q-Former reads, ``last``) and trains the same small probe on each: one
transformer encoder layer over the tokens, then per-token shape logits max-pooled over the tokens
into a multi-label "which shapes" (binary cross-entropy, Adam). As a reference with the same
budget, a small CNN learns the same from the pixels. Scores are micro and macro F1 (and the share
of scenes whose whole shape set is right) on held-out scenes: the probes train on a split's first
``n_train`` records and are scored on the next ``n_eval``. The shape names are the benchmark's own
(its info file's vocabulary). Seeded: the same settings on the same machine give the same figures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...adapters.entries import ConfigError

logger = logging.getLogger(__name__)

PROBE_HEADS = 4
"""Attention heads of the probe's transformer layer (fewer when the token width does not divide)."""
PROBE_FEEDFORWARD = 256
EVAL_CHUNK = 250


@dataclass
class ProbeSettings:
    """How the probes are trained and scored (saved in the report)."""

    n_train: int = 4000
    """Scenes the probes train on: the split's first ``n_train`` records."""
    n_eval: int = 1000
    """Held-out scenes they are scored on: the ``n_eval`` records after those."""
    steps: int = 1000
    """Optimiser steps per probe (the same budget for every layer and for the pixel CNN)."""
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    """Seeds each probe's initialisation and its batches (the same for every layer)."""
    split: str = "train"
    """The benchmark split the scenes come from."""
    pixel_cnn: bool = True
    """Train the small CNN on the pixels as the reference."""
    device: str = "cpu"
    """Where the probes train (the encoder runs where its entry says)."""

    def __post_init__(self) -> None:
        for name in ("n_train", "n_eval", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"probe: {name!r} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"probe: 'lr' must be > 0, got {self.lr}")


@dataclass
class SceneShapes:
    """The scenes a probe reads: their image files and which shapes each holds."""

    paths: list[Path]
    labels: torch.Tensor
    """(N, S) float 0/1: scene i holds shape s."""
    shapes: list[str]


def read_scene_shapes(root: Path, split: str, n: int) -> SceneShapes:
    """The first ``n`` records of a benchmark split, with their shape sets (names from the
    benchmark's vocabulary)."""
    from ..scenes.dataset import INFO_FILE, SceneDataError, SceneDataMissingError

    root = Path(root).expanduser()
    manifest = root / f"{split}.jsonl"
    if not (root / INFO_FILE).is_file() or not manifest.is_file():
        raise SceneDataMissingError(f"{root} holds no scene benchmark with a {split!r} split ({manifest.name})")
    info = json.loads((root / INFO_FILE).read_text(encoding="utf-8"))
    shapes = list(info.get("vocabulary", {}).get("shapes", []))
    records = []
    with manifest.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                records.append(json.loads(line))
            if len(records) == n:
                break
    if len(records) < n:
        raise SceneDataError(
            f"the {split!r} split of {root} has {len(records)} scenes; the probe needs {n} (train + eval): "
            "ask for fewer or generate a larger benchmark"
        )
    seen = sorted({obj["shape"] for r in records for obj in r["scene"]["objects"]})
    shapes = shapes or seen
    unknown = [s for s in seen if s not in shapes]
    if unknown:
        raise SceneDataError(f"{root}: shapes {unknown} are not in the benchmark's vocabulary {shapes}")
    labels = torch.zeros(len(records), len(shapes))
    for i, record in enumerate(records):
        for obj in record["scene"]["objects"]:
            labels[i, shapes.index(obj["shape"])] = 1
    return SceneShapes([root / r["path"] for r in records], labels, shapes)


# ---------------------------------------------------------------------------------------- probes
class TokenProbe(nn.Module):
    """(B, N, W) tokens -> (B, S) shape logits: one transformer layer, per-token logits, max over tokens."""

    def __init__(self, width: int, n_shapes: int) -> None:
        super().__init__()
        heads = next(h for h in (PROBE_HEADS, 2, 1) if width % h == 0)
        self.layer = nn.TransformerEncoderLayer(width, heads, PROBE_FEEDFORWARD, dropout=0.0, batch_first=True)
        self.head = nn.Linear(width, n_shapes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(tokens)).amax(1)  # (B, N, S) -> (B, S)


class PixelCNN(nn.Module):
    """(B, 3, H, W) pixels -> (B, S) shape logits: four convolutions (stride 8 in all), per-cell
    logits, max over cells. The reference: what the pixels hold for the same budget."""

    def __init__(self, n_shapes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1), nn.GELU(), nn.Conv2d(32, 64, 3, 2, 1), nn.GELU(),
            nn.Conv2d(64, 128, 3, 2, 1), nn.GELU(), nn.Conv2d(128, 128, 3, 1, 1), nn.GELU(),
        )  # fmt: skip
        self.head = nn.Linear(128, n_shapes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        cells = self.net(pixels).flatten(2).transpose(1, 2)  # (B, H/8 * W/8, 128)
        return self.head(cells).amax(1)


def shape_scores(logits: torch.Tensor, labels: torch.Tensor, shapes: list[str]) -> dict[str, Any]:
    """Micro and macro F1 of ``logits > 0`` against 0/1 ``labels`` (both (N, S)), per-shape F1
    (None for a shape neither predicted nor present) and the exact-set accuracy."""
    pred, truth = logits > 0, labels > 0
    hits = (pred & truth).sum(0).double()  # (S,)
    sizes = (pred.sum(0) + truth.sum(0)).double()
    per_shape = {s: (float(2 * hits[i] / sizes[i]) if sizes[i] > 0 else None) for i, s in enumerate(shapes)}
    scored = [f for f in per_shape.values() if f is not None]
    return {
        "micro_f1": float(2 * hits.sum() / sizes.sum()) if sizes.sum() > 0 else 0.0,
        "macro_f1": sum(scored) / len(scored) if scored else 0.0,
        "exact_set_accuracy": float((pred == truth).all(1).double().mean()),
        "per_shape_f1": per_shape,
    }


def fit_probe(
    probe: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    shapes: list[str],
    settings: ProbeSettings,
    *,
    desc: str = "probe",
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train ``probe`` on the first ``n_train`` rows of ``inputs`` (N, ...) / ``labels`` (N, S) for
    ``steps`` seeded batches, score it on the rest. The probe must be built just after
    ``torch.manual_seed(settings.seed)`` (:func:`new_probe` does) for a seeded run."""
    from ..progress import progress_bar

    device = torch.device(settings.device)
    n_train = settings.n_train
    probe = probe.to(device).train()
    optimizer = torch.optim.Adam(probe.parameters(), settings.lr)
    batches = torch.Generator().manual_seed(settings.seed)
    start = time.perf_counter()
    with progress_bar(desc, settings.steps, "step", progress) as bar:
        for _ in range(settings.steps):
            idx = torch.randint(0, n_train, (settings.batch_size,), generator=batches)  # (B,)
            logits = probe(inputs[idx].to(device, torch.float32))  # (B, S)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, labels[idx].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            bar.advance(1)
    probe.eval()
    with torch.no_grad():
        held_out = [
            probe(inputs[i : i + EVAL_CHUNK].to(device, torch.float32)).cpu()
            for i in range(n_train, len(inputs), EVAL_CHUNK)
        ]
    scores = shape_scores(torch.cat(held_out), labels[n_train:], shapes)
    scores.update(final_loss=float(loss.detach()), seconds=time.perf_counter() - start)
    logger.info("%s: micro F1 %.3f, macro F1 %.3f (%.0f s)", desc, scores["micro_f1"], scores["macro_f1"],
                scores["seconds"])  # fmt: skip
    return scores


def new_probe(kind: str, seed: int, n_shapes: int, width: int = 0) -> nn.Module:
    """A freshly seeded probe: ``tokens`` (a :class:`TokenProbe` for ``width``-wide tokens) or ``pixels``."""
    torch.manual_seed(seed)
    return TokenProbe(width, n_shapes) if kind == "tokens" else PixelCNN(n_shapes)


# -------------------------------------------------------------------------------------- encoders
def probe_layers(clip: nn.Module, layers: list[str] | None) -> list[str]:
    """The layer names to probe on this CLIP: ``layers`` as given (unknown names fail now, naming
    the tower's), or by default every layer of the tower and ``qformer`` (on a conv tower
    ``qformer`` is one of its stages, probed once)."""
    from ...adapters.frozen_clip import QFORMER_LAYER, default_vision_stage, vision_layer, vision_layers

    if layers:
        for name in layers:
            vision_layer(clip, name)
        return list(dict.fromkeys(layers))
    names = [layer.name for layer in vision_layers(clip)]
    return names + [QFORMER_LAYER] if default_vision_stage(clip) is None else names


def _encoder_key(entry: Any, taken: dict[str, Any]) -> str:
    base = entry if isinstance(entry, str) else str(getattr(entry, "name", None) or dict(entry).get("name", "encoder"))
    key, n = base, 2
    while key in taken:
        key, n = f"{base} #{n}", n + 1
    return key


def probe_encoder(
    entry: Any,
    scenes: SceneShapes,
    settings: ProbeSettings,
    *,
    layers: list[str] | None = None,
    pixel_results: dict[str, dict[str, Any]] | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """One encoder entry's block of the report: its tower, what the Q-Former reads, and per layer
    the token grid and the probe's scores; the pixel CNN on its pixels (``pixel_results``: pixel
    digest -> result, shared across encoders so identical pixels are probed once)."""
    from ...adapters.frozen_clip import (
        QFORMER_LAYER,
        clip_vision_layers,
        default_vision_stage,
        frozen,
        tower_image_size,
        tower_kind,
        vision_layer,
    )
    from ...adapters.registry import load_encoder
    from ..store.images import load_image

    encoder = load_encoder(entry)
    clip = frozen(encoder.model).eval()
    model_device = next(clip.parameters()).device
    names = probe_layers(clip, layers)
    start = time.perf_counter()
    pixels = torch.stack([encoder.image_transform(load_image(p)) for p in scenes.paths])  # (N, 3, H, W) normalised
    read_seconds = time.perf_counter() - start
    stage = default_vision_stage(clip)
    block: dict[str, Any] = {
        "entry": entry if isinstance(entry, str | dict) else asdict(entry),
        "fingerprint": getattr(encoder, "fingerprint", None),
        "tower": tower_kind(clip.visual),
        "image_size": list(tower_image_size(clip.visual)),
        "qformer_reads": stage or "the output tokens: the pooled token, then the patch tokens after ln_post",
        "read_images_seconds": read_seconds,
        "layers": {},
    }
    done: dict[str, dict[str, Any]] = {}  # resolved layer -> result: `qformer` or `last` may repeat one
    for name in names:
        layer = vision_layer(clip, name)
        shape = {"layer": layer.name, "tokens": layer.tokens, "grid": list(layer.grid), "width": layer.width,
                 "extra_tokens": layer.extra_tokens}  # fmt: skip
        if layer.name in done:
            block["layers"][name] = {**done[layer.name], **shape}
            continue
        t0 = time.perf_counter()
        with torch.inference_mode():
            chunks = [
                clip_vision_layers(clip, pixels[i : i + EVAL_CHUNK].to(model_device), [name])[name].float().cpu()
                for i in range(0, len(pixels), EVAL_CHUNK)
            ]
        tokens = torch.cat(chunks)  # (N, tokens, width)
        del chunks
        encode_seconds = time.perf_counter() - t0
        probe = new_probe("tokens", settings.seed, len(scenes.shapes), layer.width)
        scores = fit_probe(probe, tokens, scenes.labels, scenes.shapes, settings, desc=f"{name}", progress=progress)
        del tokens
        done[layer.name] = {**shape, **scores, "encode_seconds": encode_seconds}
        block["layers"][name] = done[layer.name]
    if settings.pixel_cnn:
        digest = hashlib.sha256(pixels.numpy().tobytes()).hexdigest()
        results = pixel_results if pixel_results is not None else {}
        if digest not in results:
            probe = new_probe("pixels", settings.seed, len(scenes.shapes))
            results[digest] = fit_probe(
                probe, pixels, scenes.labels, scenes.shapes, settings, desc="pixel CNN", progress=progress
            )
            results[digest]["input"] = list(pixels.shape[1:])
        block["pixel_cnn"] = results[digest]
    qformer = vision_layer(clip, QFORMER_LAYER).name
    if qformer in done:  # the headline figure: the probe on what the Q-Former reads
        block["qformer_micro_f1"] = done[qformer]["micro_f1"]
    return block


def probe_report(
    root: Path,
    entries: list[Any],
    settings: ProbeSettings | None = None,
    *,
    layers: list[str] | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """The shape probe on every encoder entry, on the same scenes with the same budget: the report."""
    from ..reports import machine_info

    if not entries:
        raise ConfigError("probe: name at least one encoder entry")
    settings = settings or ProbeSettings()
    scenes = read_scene_shapes(root, settings.split, settings.n_train + settings.n_eval)
    encoders: dict[str, Any] = {}
    pixel_results: dict[str, dict[str, Any]] = {}
    for entry in entries:
        key = _encoder_key(entry, encoders)
        logger.info("probing %s", key)
        encoders[key] = probe_encoder(
            entry, scenes, settings, layers=layers, pixel_results=pixel_results, progress=progress
        )
    return {
        "what": f"shape-set probe: which of the {len(scenes.shapes)} shapes a scene holds, read from each "
        "encoder's vision tokens at each layer and by a small CNN from the pixels, same budget",
        "probe": f"one transformer encoder layer ({PROBE_HEADS} heads, feed-forward {PROBE_FEEDFORWARD}) over the "
        "tokens, per-token shape logits max-pooled over the tokens; binary cross-entropy, Adam",
        "scenes": str(Path(root).expanduser()),
        "shapes": scenes.shapes,
        "settings": asdict(settings),
        "chance_note": "predicting no shape scores F1 0",
        "encoders": encoders,
        "machine": machine_info(),
    }


__all__ = [
    "PixelCNN",
    "ProbeSettings",
    "SceneShapes",
    "TokenProbe",
    "fit_probe",
    "new_probe",
    "probe_encoder",
    "probe_layers",
    "probe_report",
    "read_scene_shapes",
    "shape_scores",
]
