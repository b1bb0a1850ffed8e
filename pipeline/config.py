"""Pipeline presets: YAML turned into typed dataclasses at the boundary.

Three kinds of file live in ``configs/`` (found through :mod:`importlib.resources`, so they
work from an installed wheel):

* ``configs/models/<name>.yaml`` — a model entry: *which architecture* and *which weights*
  (read by :mod:`viewfinder.adapters.registry`).
* ``configs/presets/<name>.yaml`` — a pipeline preset: the encoder, index settings and the stages.
* ``configs/arch/<name>.json`` — open_clip architecture configs (data, not code).

Unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..adapters.entries import (
    ConfigError,
    EncoderEntry,
    config_root,
    from_dict,
    packaged_names,
    read_yaml,
    to_plain,
)
from ..adapters.registry import load_encoder_entry

__all__ = [
    "ConfigError",
    "EncoderEntry",
    "IndexConfig",
    "Preset",
    "StageSpec",
    "config_root",
    "from_dict",
    "load_encoder_entry",
    "packaged_names",
    "read_yaml",
    "to_plain",
]


@dataclass
class IndexConfig:
    """How a collection is indexed and searched."""

    factory: str = "Flat"
    """FAISS index: a preset (``Flat``, ``IVF``, ``IVFPQ``, ``HNSW``) or any FAISS factory
    string (``IVF1024,Flat``, ``HNSW32``, ``PQ64``…). Inner product on L2-normalised vectors."""
    nprobe: int = 0
    """IVF lists visited per query (0: the value tuned to ``target_recall`` when the index was built,
    16 for an index without one)."""
    target_recall: float = 0.99
    """An IVF index built anew gets the smallest nprobe whose recall@10 on a sample of its own vectors
    reaches this (0: no tuning); the value is recorded in the index."""
    ef_search: int = 64
    """HNSW search breadth."""
    batch_size: int = 64
    """Images decoded and encoded per batch."""
    num_workers: int = 2
    """Decoding worker processes (0: decode in the main process)."""
    checkpoint_every: int = 512
    """Embeddings are checkpointed to disk every this many items, so a killed run resumes."""
    max_image_pixels: int = 89_478_485
    """Decompression-bomb limit: larger images are skipped (PIL's default limit)."""
    decode_timeout: float = 30.0
    """Seconds one image may take to decode and preprocess before it is skipped as too slow (0: no limit)."""
    decode: str = "auto"
    """Where images are decoded: ``cpu`` (worker processes), ``gpu`` (plain JPEGs in batches on the
    encoder's device with ``torchvision.io.decode_jpeg``, the rest on the CPU), ``auto`` (gpu when the
    encoder runs on CUDA)."""
    engine: str = "local"
    """Where embedding runs: ``local`` (DataLoader workers decode, this process encodes) or ``ray``
    (Ray Data: decoding tasks and an encoder actor pool, on a local Ray or the cluster at ``ray_address``)."""
    ray_address: str | None = None
    """Ray cluster to join (``ray://host:10001``, ``auto``); None starts a local Ray."""
    ray_actors: int = 0
    """Encoder actors (0: one per GPU of the cluster, else one per two CPUs)."""

    def __post_init__(self) -> None:
        for name in ("ef_search", "batch_size", "checkpoint_every", "max_image_pixels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"index: field {name!r} must be >= 1")
        if self.decode_timeout < 0:
            raise ConfigError("index: field 'decode_timeout' must be >= 0 (0: no limit)")
        if self.nprobe < 0:
            raise ConfigError("index: field 'nprobe' must be >= 0 (0: the index's tuned value)")
        if not 0 <= self.target_recall < 1:
            raise ConfigError("index: field 'target_recall' must be in [0, 1) (0: no tuning)")
        if self.num_workers < 0:
            raise ConfigError("index: field 'num_workers' must be >= 0")
        if self.ray_actors < 0:
            raise ConfigError("index: field 'ray_actors' must be >= 0")
        if self.decode not in ("auto", "cpu", "gpu"):
            raise ConfigError(f"index: field 'decode' must be 'auto', 'cpu' or 'gpu', not {self.decode!r}")
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"index: field 'engine' must be 'local' or 'ray', not {self.engine!r}")
        if not self.factory.strip():
            raise ConfigError("index: field 'factory' must not be empty")


@dataclass
class StageSpec:
    """One stage of a preset: its registered name and its validated settings (the stage's config
    dataclass)."""

    name: str
    config: Any


@dataclass
class Preset:
    """A pipeline preset: which models, the index settings, and the stages a query runs through."""

    name: str
    encoder: EncoderEntry
    index: IndexConfig = field(default_factory=IndexConfig)
    stages: list[StageSpec] = field(default_factory=list)
    """Stages in order (:func:`~viewfinder.pipeline.stages.presets.load_preset` validates them against
    the stage registry); empty, or a preset file without ``stages``: preselect only."""
    source: str | None = None
    """The packaged name or the absolute YAML path it was loaded from (indexes record it)."""


def preset_summary(preset: Preset) -> dict[str, Any]:
    """What an index records of the preset it was built with."""
    return {"name": preset.name, "source": preset.source, "factory": preset.index.factory}
