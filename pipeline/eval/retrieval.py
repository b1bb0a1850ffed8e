"""Retrieval evaluation: Recall@K text-to-image and image-to-text, standard protocol.

Every caption is a query whose target is its image; image-to-text counts a hit when any of the
image's captions is within the top K. Images go through the same indexing path as a user's
data (a JSONL manifest indexed by :class:`~viewfinder.pipeline.store.indexer.Indexer`); rankings are
exact (brute-force inner product over the stored vectors).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...adapters.base import ImageTextEncoder
from ...adapters.package_file import cache_root
from ...errors import Error
from ..config import IndexConfig
from ..reports import machine_info
from ..store.fsutil import atomic_write_text
from ..store.index_store import IndexStore
from ..store.indexer import Indexer

logger = logging.getLogger(__name__)

DEFAULT_KS = (1, 5, 10)


class EvalDataError(Error, ValueError):
    """The evaluation data cannot be read as asked."""


@dataclass
class EvalSet:
    """Images and their captions for one split."""

    name: str
    split: str
    image_keys: list[str]
    image_paths: list[str]
    captions: list[str]
    caption_image: list[int]
    """Index into ``image_keys`` of each caption's image."""
    records: list[dict[str, Any]] = field(default_factory=list)
    """Extra per-image fields (e.g. scene graphs), aligned with ``image_keys``."""
    source_manifest: Path | None = None
    """A JSONL manifest holding exactly these images, indexed as it is (captions kept as metadata)."""


def load_karpathy(path: Path, split: str, image_root: Path | None = None) -> EvalSet:
    """Read a Karpathy-format JSON (``dataset_flickr30k.json``, ``dataset_coco.json``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EvalDataError(f"cannot read Karpathy JSON {path}: {exc}") from exc
    if "images" not in data:
        raise EvalDataError(f"{path} has no 'images' list: not a Karpathy-format file")
    root = image_root or path.parent
    keys, paths, captions, owner = [], [], [], []
    splits = set()
    for image in data["images"]:
        splits.add(image.get("split"))
        if image.get("split") != split:
            continue
        rel = Path(image.get("filepath", "")) / image["filename"]
        keys.append(str(image.get("imgid", rel.as_posix())))
        paths.append(str(root / rel))
        for sentence in image.get("sentences", []):
            captions.append(sentence["raw"].strip())
            owner.append(len(keys) - 1)
    if not keys:
        raise EvalDataError(f"{path} has no images in split {split!r}; splits present: {sorted(map(str, splits))}")
    return EvalSet(data.get("dataset", path.stem), split, keys, paths, captions, owner)


def load_manifest(path: Path, split: str | None = None) -> EvalSet:
    """Read a JSONL manifest whose lines carry ``caption`` (a string or a list)."""
    keys, paths, captions, owner, records = [], [], [], [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalDataError(f"{path}:{lineno}: bad JSON: {exc.msg}") from exc
        if split and record.get("split", split) != split:
            continue
        caps = record.get("caption") or []
        caps = [caps] if isinstance(caps, str) else caps
        rel = Path(record["path"]).expanduser()
        full = rel if rel.is_absolute() else path.parent / rel
        inside = full.is_relative_to(path.parent)  # the key the indexer gives a line with no id
        keys.append(str(record.get("id", full.relative_to(path.parent).as_posix() if inside else full)))
        paths.append(str(full))
        records.append(record)
        for cap in caps:
            captions.append(str(cap))
            owner.append(len(keys) - 1)
    if not captions:
        raise EvalDataError(f"{path} has no captions{f' in split {split!r}' if split else ''}: nothing to evaluate")
    return EvalSet(path.stem, split or "all", keys, paths, captions, owner, records, None if split else path)


def write_eval_manifest(evalset: EvalSet, path: Path) -> Path:
    """The images of an eval set as a JSONL manifest, the input of ``viewfinder index``."""
    lines = [json.dumps({"id": k, "path": p}) for k, p in zip(evalset.image_keys, evalset.image_paths, strict=True)]
    if not path.is_file() or path.read_text() != "\n".join(lines) + "\n":
        atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def ranks_of_targets(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(Q, N) scores and (Q,) target columns -> (Q,) 1-based rank of each target (ties count against)."""
    target_scores = scores[np.arange(len(targets)), targets]  # (Q,)
    return (scores > target_scores[:, None]).sum(axis=1) + 1


def recall_from_ranks(ranks: np.ndarray, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    return {f"R@{k}": float((ranks <= k).mean()) for k in ks}


@dataclass
class RetrievalMetrics:
    text_to_image: dict[str, float]
    image_to_text: dict[str, float]
    t2i_median_rank: float
    i2t_median_rank: float
    t2i_ranks: list[int] = field(repr=False, default_factory=list)
    i2t_ranks: list[int] = field(repr=False, default_factory=list)


def retrieval_metrics(
    image_vecs: np.ndarray, text_vecs: np.ndarray, caption_image: np.ndarray, ks: tuple[int, ...] = DEFAULT_KS
) -> RetrievalMetrics:
    """Standard protocol on (N, D) image and (C, D) caption embeddings; ``caption_image``: (C,)."""
    sims = text_vecs @ image_vecs.T  # (C, N)
    t2i = ranks_of_targets(sims, caption_image)
    # image -> text: the best rank among the image's own captions.
    order = np.argsort(-sims.T, axis=1, kind="stable")  # (N, C) captions by score
    owner_sorted = caption_image[order]  # (N, C) image of each ranked caption
    hit = owner_sorted == np.arange(len(image_vecs))[:, None]
    has_caption = hit.any(axis=1)
    i2t = hit.argmax(axis=1)[has_caption] + 1
    return RetrievalMetrics(
        recall_from_ranks(t2i, ks),
        recall_from_ranks(i2t, ks),
        float(np.median(t2i)),
        float(np.median(i2t)),
        t2i.tolist(),
        i2t.tolist(),
    )


def eval_index_dir(work_dir: Path, split: str, fingerprint: str) -> Path:
    return work_dir / f"index-{split}-{fingerprint[:12]}"


def index_evalset(
    evalset: EvalSet,
    encoder: ImageTextEncoder,
    index_config: IndexConfig,
    work_dir: Path,
    encoder_entry: dict[str, Any] | None = None,
    index_dir: Path | None = None,
) -> tuple[list[str], np.ndarray]:
    """Index the eval set's images (incrementally, in ``index_dir`` or a folder of ``work_dir``)
    and return (keys, vectors)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    manifest = evalset.source_manifest or write_eval_manifest(evalset, work_dir / f"{evalset.split}.images.jsonl")
    index_dir = index_dir or eval_index_dir(work_dir, evalset.split, encoder.fingerprint)
    report = Indexer(encoder, index_config, encoder_entry=encoder_entry).run(manifest, index_dir)
    if report.skipped:
        logger.warning("%d eval images could not be indexed, e.g. %s", len(report.skipped), report.skipped[0])
    with IndexStore.open(index_dir) as store:
        ids, vecs = store.vectors()
        rows = store.items_by_id(ids.tolist())
        keys = [rows[int(i)].key for i in ids]
    return keys, vecs


def evaluate_retrieval(
    evalset: EvalSet,
    encoder: ImageTextEncoder,
    index_config: IndexConfig,
    work_dir: Path,
    ks: tuple[int, ...] = DEFAULT_KS,
    encoder_entry: dict[str, Any] | None = None,
    index_dir: Path | None = None,
) -> dict[str, Any]:
    """Recall@K both ways for an eval set; returns a JSON-ready report."""
    t0 = time.perf_counter()
    keys, vecs = index_evalset(evalset, encoder, index_config, work_dir, encoder_entry, index_dir)
    position = {k: i for i, k in enumerate(keys)}
    missing = [k for k in evalset.image_keys if k not in position]
    if missing:
        logger.warning("%d images missing from the index are left out of the evaluation", len(missing))
    caption_targets = np.array([position.get(evalset.image_keys[i], -1) for i in evalset.caption_image])
    keep = caption_targets >= 0
    captions = [c for c, ok in zip(evalset.captions, keep, strict=True) if ok]
    t1 = time.perf_counter()
    text_vecs = encoder.encode_texts(captions)  # (C, D)
    t2 = time.perf_counter()
    metrics = retrieval_metrics(vecs, text_vecs, caption_targets[keep], ks)
    return {
        "dataset": evalset.name,
        "split": evalset.split,
        "images": len(keys),
        "captions": len(captions),
        "encoder": {"name": encoder.name, "fingerprint": encoder.fingerprint},
        "text_to_image": metrics.text_to_image,
        "image_to_text": metrics.image_to_text,
        "t2i_median_rank": metrics.t2i_median_rank,
        "i2t_median_rank": metrics.i2t_median_rank,
        "recall_curves": {
            "k": list(range(1, 51)),
            "text_to_image": [float((np.array(metrics.t2i_ranks) <= k).mean()) for k in range(1, 51)],
            "image_to_text": [float((np.array(metrics.i2t_ranks) <= k).mean()) for k in range(1, 51)],
        },
        "seconds": {"index_images": t1 - t0, "encode_captions": t2 - t1, "total": time.perf_counter() - t0},
        "machine": machine_info(),
    }


def work_dir_for(dataset: Path) -> Path:
    """Cache folder for the indexes an evaluation builds (reused by later runs)."""
    digest = hashlib.sha256(str(dataset.resolve()).encode()).hexdigest()[:12]
    return cache_root() / "eval" / f"{dataset.stem}-{digest}"
