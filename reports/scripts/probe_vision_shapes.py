"""How much shape information do the frozen scene CLIP's vision tokens carry?

The Q-Former reranker and captioner read the frozen scene CLIP's vision tokens. Both stay weak on
shapes (reranked partial-query shape share, caption shape F1) while colour, size and position are
near perfect. This probe asks whether the tokens hold the shapes at all: the same small probe
(one transformer layer over the tokens, then per-token shape logits max-pooled into "which shapes
does the image contain") is trained on the tokens after the patch embedding (layer 0) and after the
last block, and, as a reference with the same budget, a small CNN on the pixels.

Usage: python reports/scripts/probe_vision_shapes.py ~/.cache/viewfinder/scenes-64 reports/probe-vision-shapes.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from viewfinder.adapters.registry import load_encoder
from viewfinder.pipeline.eval.retrieval import machine_info
from viewfinder.pipeline.scenes.graph import SHAPES
from viewfinder.pipeline.store.images import load_image

N_TRAIN, N_EVAL, STEPS, BATCH = 4000, 1000, 1000, 128


def vision_layers(clip: nn.Module, pixels: torch.Tensor) -> list[torch.Tensor]:
    """(B, 3, H, W) -> the token states after the patch embedding (+ ln_pre) and after each block."""
    v = clip.visual
    x = v.conv1(pixels).flatten(2).transpose(1, 2)  # (B, G*G, W)
    cls = v.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
    x = v.ln_pre(torch.cat([cls, x], 1) + v.positional_embedding.to(x.dtype))
    states = [x]
    for block in v.transformer.resblocks:
        x = block(x)
        states.append(x)
    return states


class TokenProbe(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(width, 4, 256, dropout=0.0, batch_first=True)
        self.head = nn.Linear(width, len(SHAPES))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(tokens)).amax(1)


class PixelCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1), nn.GELU(), nn.Conv2d(32, 64, 3, 2, 1), nn.GELU(),
            nn.Conv2d(64, 128, 3, 2, 1), nn.GELU(), nn.Conv2d(128, 128, 3, 1, 1), nn.GELU(),
        )  # fmt: skip
        self.head = nn.Linear(128, len(SHAPES))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(pixels).flatten(2).transpose(1, 2)).amax(1)


def fit(name: str, probe: nn.Module, data: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(probe.parameters(), 1e-3)
    start = time.perf_counter()
    for _ in range(STEPS):
        idx = torch.randint(0, N_TRAIN, (BATCH,))
        loss = nn.functional.binary_cross_entropy_with_logits(probe(data[idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        pred = torch.cat([probe(data[i : i + 250]) for i in range(N_TRAIN, N_TRAIN + N_EVAL, 250)]) > 0
    truth = labels[N_TRAIN:] > 0
    f1 = float(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))
    exact = float((pred == truth).all(1).float().mean())
    print(f"{name}: shape-set F1 {f1:.3f}, exact set {exact:.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return {"shape_f1": f1, "exact_set_accuracy": exact, "seconds": time.perf_counter() - start}


def main(root: Path, out: Path) -> None:
    torch.manual_seed(0)
    encoder = load_encoder("scene-clip")
    clip = encoder.model.float().eval()
    records = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()[: N_TRAIN + N_EVAL]]
    pixels = torch.stack([encoder.image_transform(load_image(root / r["path"])) for r in records])  # normalised
    labels = torch.zeros(len(records), len(SHAPES))
    for i, r in enumerate(records):
        for obj in r["scene"]["objects"]:
            labels[i, SHAPES.index(obj["shape"])] = 1
    with torch.no_grad():
        chunks = [vision_layers(clip, pixels[i : i + 500]) for i in range(0, len(pixels), 500)]
    first, last = torch.cat([c[0] for c in chunks]), torch.cat([c[-1] for c in chunks])
    width = first.shape[-1]
    results = {
        "frozen scene-clip tokens after the patch embedding (layer 0)": fit(
            "layer 0", TokenProbe(width), first, labels
        ),
        "frozen scene-clip tokens after the last block (what the Q-Former reads)": fit(
            "last block", TokenProbe(width), last, labels
        ),
        "small CNN on the pixels (reference)": fit("pixel CNN", PixelCNN(), pixels, labels),
    }
    report = {
        "what": "shape-set probe: which of the 8 shapes a scene contains, from each input, same budget",
        "train_images": N_TRAIN, "eval_images": N_EVAL, "steps": STEPS, "batch_size": BATCH,
        "chance_note": "predicting no shape scores F1 0",
        "results": results, "machine": machine_info(), "command": " ".join(["python", *sys.argv]),
    }  # fmt: skip
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]).expanduser(), Path(sys.argv[2]))
