"""The ``ray`` engine: Ray Data reads and decodes in tasks, an actor pool encodes, the driver stores.

The pipeline is ``from_items(paths) -> map_batches(decode) -> map_batches(EncoderActor)``: decoding
tasks run on every CPU of the cluster, each encoder actor holds one copy of the encoder (one actor per
GPU, or CPU actors), and the driver iterates the results and hands them to the indexer, which writes
them to the store's ``pending`` table and commits exactly as with the local engine.

What crosses the cluster: the encoder once (pickled into the object store, so every actor runs the
very weights the driver fingerprinted; its fingerprint is checked in each actor), each item's *path*
to the decoding tasks, and preprocessed pixels from the tasks to the actors. Paths, not bytes: a
cluster reads the collection from storage every node mounts, so the driver neither reads every file
nor ships it through the object store.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from ...errors import Error
from .decode import read_and_decode
from .engines import EmbeddedBatch, worker_transform
from .records import ItemRow

if TYPE_CHECKING:
    from ...adapters.base import ImageTextEncoder
    from ..config import IndexConfig
    from .sources import Modality

logger = logging.getLogger(__name__)


class RayEngineError(Error, RuntimeError):
    """Ray is missing, or the cluster cannot run the job; the message says what to do."""


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayEngineError(
            "the ray engine needs Ray Data: pip install 'viewfinder[ray]' (or 'ray[data]'), "
            "or index with the local engine"
        ) from exc
    return ray


def connect(address: str | None) -> Any:
    """The ``ray`` module, connected: to ``address``, to the Ray this process already joined, or to a new
    local Ray (quiet: no dashboard, workers' logs not forwarded)."""
    ray = _ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address!r}" if address else "a local Ray"
            raise RayEngineError(f"cannot start or join {where}: {exc}") from exc
    return ray


def pool_size(ray: Any, requested: int) -> tuple[int, float, float]:
    """(actors, GPUs per actor, CPUs per actor): ``requested`` actors when given, else one per GPU of
    the cluster, else one per two CPUs (the other CPU decodes)."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    if gpus:
        return (requested or gpus), 1.0, 1.0
    return (requested or max(1, cpus // 2)), 0.0, 1.0


def items_dataset(ray: Any, items: list[dict[str, Any]], config: IndexConfig) -> Any:
    """A Ray dataset of ``items`` in blocks of about one batch (so every actor gets work early)."""
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False  # the caller shows its own
    blocks = max(1, min(len(items), -(-len(items) // config.batch_size)))
    return ray.data.from_items(items, override_num_blocks=blocks)


def with_actor_pool(ray: Any, ds: Any, actor: type, kwargs: dict[str, Any], config: IndexConfig) -> Any:
    """``ds`` mapped through a pool of ``actor(**kwargs)`` sized by :func:`pool_size` (each actor's torch
    threads: its CPUs, or ``VIEWFINDER_RAY_THREADS``)."""
    actors, gpus, cpus = pool_size(ray, config.ray_actors)
    logger.info("ray: %d %s actor(s), %s GPU and %s CPU each", actors, actor.__name__, gpus, cpus)
    threads = int(os.environ.get("VIEWFINDER_RAY_THREADS", "0")) or int(cpus)
    return ds.map_batches(
        actor,
        fn_constructor_kwargs={**kwargs, "threads": threads},
        batch_size=config.batch_size,
        batch_format="numpy",
        concurrency=actors,
        num_gpus=gpus,
        num_cpus=cpus,
    )


def decode_batch(
    batch: dict[str, np.ndarray],
    *,
    transform: Callable[[Any], torch.Tensor],
    max_pixels: int,
    shape: tuple[int, ...],
    dtype: str,
    time_limit: float = 0.0,
) -> dict[str, np.ndarray]:
    """A Ray Data task: read, hash, decode and preprocess a batch of paths. Rows that fail keep zero
    pixels and say why in ``reason``; a row whose preprocessing gives another shape fails too."""
    paths = batch["path"]
    pixels = np.zeros((len(paths), *shape), dtype=dtype)
    shas, reasons = [], []
    for j, path in enumerate(paths):
        px, sha, reason = read_and_decode(str(path), transform, max_pixels, time_limit)
        if px is not None and tuple(px.shape) != shape:
            px, sha, reason = None, "", f"preprocessing gave shape {tuple(px.shape)}, not {shape}"
        if px is not None:
            pixels[j] = px.numpy()
        shas.append(sha)
        reasons.append(reason)
    return {"i": batch["i"], "pixels": pixels, "sha": np.array(shas, object), "reason": np.array(reasons, object)}


class EncoderActor:
    """A Ray actor holding one encoder: encodes the decoded rows of each batch (images or texts)."""

    def __init__(self, encoder: Any, fingerprint: str, threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        if torch.cuda.is_available() and hasattr(encoder, "to_device"):
            encoder.to_device(torch.device("cuda"))  # Ray gave this actor a GPU (CUDA_VISIBLE_DEVICES)
        if encoder.fingerprint != fingerprint:
            raise RayEngineError(f"the encoder arrived with fingerprint {encoder.fingerprint}, not {fingerprint}")
        self.encoder = encoder

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        dim = self.encoder.embed_dim
        if "text" in batch:
            vectors = np.asarray(self.encoder.encode_texts([str(t) for t in batch["text"]]), np.float32)
            n = len(vectors)
            empty = np.array([""] * n, object)
            return {"i": batch["i"], "vector": vectors, "sha": empty, "reason": empty}
        ok = np.array([not r for r in batch["reason"]], dtype=bool)
        vectors = np.zeros((len(ok), dim), np.float32)
        if ok.any():
            vectors[ok] = self.encoder.encode_image_tensors(torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok])))
        return {"i": batch["i"], "vector": vectors, "sha": batch["sha"], "reason": batch["reason"]}


def ray_batches(
    encoder: ImageTextEncoder, rows: list[ItemRow], config: IndexConfig, modality: Modality
) -> Iterator[EmbeddedBatch]:
    """Embeddings of ``rows`` computed on Ray Data, as :class:`EmbeddedBatch` es in completion order."""
    ray = connect(config.ray_address)
    if modality == "image":
        items = [{"i": i, "path": row.path} for i, row in enumerate(rows)]
    else:
        items = [{"i": i, "text": row.text or ""} for i, row in enumerate(rows)]
    ds = items_dataset(ray, items, config)
    if modality == "image":
        transform = worker_transform(encoder)
        sample = transform(Image.new("RGB", (64, 48)))  # the shape and dtype every decoded image must have
        ds = ds.map_batches(
            decode_batch,
            fn_kwargs={
                "transform": transform,
                "max_pixels": config.max_image_pixels,
                "shape": tuple(sample.shape),
                "dtype": str(sample.numpy().dtype),
                "time_limit": config.decode_timeout,
            },
            batch_size=config.batch_size,
            batch_format="numpy",
        )
    ds = with_actor_pool(ray, ds, EncoderActor, {"encoder": encoder, "fingerprint": encoder.fingerprint}, config)
    for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
        reasons = [str(r) for r in out["reason"]]
        good = [j for j, r in enumerate(reasons) if not r]
        positions = [int(i) for i in out["i"]]
        yield EmbeddedBatch(
            [positions[j] for j in good],
            np.asarray(out["vector"][good], np.float32).reshape(len(good), -1),
            [str(out["sha"][j]) for j in good],
            [(positions[j], reasons[j]) for j in range(len(reasons)) if reasons[j]],
        )


class ComputeActor:
    """A Ray actor holding one model owner (a feature source, a captioner): runs ``owner.method`` on
    batches of (id, path) items, which returns (id -> value, [(id, reason)])."""

    def __init__(self, owner: Any, method: str, threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        self.compute = getattr(owner, method)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [(int(i), str(p)) for i, p in zip(batch["id"], batch["path"], strict=True)]
        made, failed = self.compute(items)
        reasons = dict(failed)
        values = np.empty(len(items), dtype=object)
        for j, (i, _) in enumerate(items):
            values[j] = made.get(i)
        return {"id": batch["id"], "value": values, "reason": np.array([reasons.get(i, "") for i, _ in items], object)}


def ray_compute(
    owner: Any, method: str, items: list[tuple[int, str]], config: IndexConfig
) -> Iterator[tuple[dict[int, Any], list[tuple[int, str]]]]:
    """``owner.method`` over ``items`` on an actor pool (the index-time caches of ``--with``): yields
    (id -> value, failures) per batch, in completion order. ``owner`` is pickled to each actor, so it
    must hold no open cache (the driver writes the results)."""
    if not items:
        return
    ray = connect(config.ray_address)
    ds = items_dataset(ray, [{"id": i, "path": p} for i, p in items], config)
    ds = with_actor_pool(ray, ds, ComputeActor, {"owner": owner, "method": method}, config)
    for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
        ids, reasons = [int(i) for i in out["id"]], [str(r) for r in out["reason"]]
        made = {i: v for i, v, r in zip(ids, out["value"], reasons, strict=True) if not r and v is not None}
        yield made, [(i, r) for i, r in zip(ids, reasons, strict=True) if r]
