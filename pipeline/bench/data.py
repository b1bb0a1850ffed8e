"""Seeded data for the benchmarks: photo-like JPEGs and clustered unit vectors."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def parse_size(text: str) -> tuple[int, int]:
    """``"320x240"`` -> (320, 240)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ValueError(f"image size must look like WIDTHxHEIGHT (e.g. 320x240), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def make_bench_images(folder: Path, n: int, size: tuple[int, int] = (320, 240), seed: int = 0) -> list[Path]:
    """Write ``n`` seeded photo-like JPEGs (gradient, noise and shapes, so decoding costs something)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)  # (H, W) each
    paths = []
    for i in range(n):
        slopes = rng.uniform(-0.5, 0.5, size=(2, 3)).astype(np.float32)
        offset = rng.uniform(40, 215, size=3).astype(np.float32)
        base = xx[..., None] * slopes[0] * 255 / width + yy[..., None] * slopes[1] * 255 / height + offset  # (H, W, 3)
        noise = rng.normal(0.0, 12.0, size=(height, width, 3)).astype(np.float32)
        image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(3, 10))):
            x0, x1 = sorted(rng.integers(0, width, size=2).tolist())
            y0, y1 = sorted(rng.integers(0, height, size=2).tolist())
            colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape((x0, y0, x1 + 1, y1 + 1), fill=colour)
        path = folder / f"bench_{i:05d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


@dataclass
class Mixture:
    """A mixture of Gaussians on a random low-dimensional subspace, the stand-in for real embeddings.

    Real image embeddings are clustered and have a low intrinsic dimension; uniform noise in 512-d
    has neither (every vector is about as far from every other), which makes recall meaningless,
    and well-separated isotropic clusters make IVF recall trivially 1.0. The defaults give
    recall@10 around 0.9 for the IVF preset at nprobe 16 over 100k 512-d vectors.
    """

    basis: np.ndarray
    """(r, D) random basis of the subspace."""
    centers: np.ndarray
    """(C, r) cluster centres, standard normal in the subspace."""
    spread: float = 1.2
    """Standard deviation of a cluster around its centre, in the subspace (centres have 1.0)."""
    noise: float = 0.3
    """Norm of the isotropic full-dimensional noise added to each point (before normalising)."""

    @classmethod
    def random(cls, dim: int, clusters: int = 1000, rank: int = 64, seed: int = 0) -> Mixture:
        rng = np.random.default_rng([seed, 0])
        rank = min(rank, dim)
        basis = rng.standard_normal((rank, dim), dtype=np.float32) / np.float32(np.sqrt(rank))  # (r, D)
        return cls(basis, rng.standard_normal((clusters, rank), dtype=np.float32))


def clustered_vectors(n: int, mixture: Mixture, rng: np.random.Generator, chunk: int = 65_536) -> np.ndarray:
    """(n, D) float32 unit vectors drawn from ``mixture``, made in chunks (1M x 512 is 2 GB)."""
    rank, dim = mixture.basis.shape
    out = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        latent = rng.standard_normal((hi - lo, rank), dtype=np.float32) * np.float32(mixture.spread)  # (b, r)
        latent += mixture.centers[rng.integers(0, len(mixture.centers), size=hi - lo)]
        block = latent @ mixture.basis  # (b, D)
        block += rng.standard_normal((hi - lo, dim), dtype=np.float32) * np.float32(mixture.noise / np.sqrt(dim))
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[lo:hi] = block
    return out
