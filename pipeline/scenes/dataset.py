"""Write the scene benchmark to disk as an ordinary image-caption dataset, and read it back.

Layout of a dataset folder::

    scenes.json                 info: format, generator config, vocabulary, held-out pairs, counts
    train.jsonl val.jsonl test.jsonl compositional.jsonl
                                one line per image: id, path (relative to this folder), caption
                                (list), split, scene (graph dict)
    images/<split>/<id>.png
    dataset_scenes.json         the same images and captions in the Karpathy (Flickr30K/COCO) format
    queries/test.jsonl queries/compositional.jsonl
                                query sets with ground truth (see :mod:`.queries`)

Train and val captions use the training templates; test and compositional captions and queries
use the test-only templates. The folder is built beside ``root`` under a temporary name and
renamed into place at the end, so a crash never leaves a folder that looks complete.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import Error
from .captions import TemplateSet, all_captions, templates
from .edits import EDIT_KINDS
from .generator import (
    SPLITS,
    SceneConfigError,
    SceneGeneratorConfig,
    generate_scenes,
    held_out_pairs,
    render_seed,
    split_constraints,
    split_rng,
)
from .graph import Scene, vocabulary
from .queries import (
    Query,
    make_binding_swap_queries,
    make_composed_queries,
    make_full_queries,
    make_partial_queries,
    make_relation_swap_queries,
    read_queries,
    write_queries,
)
from .render import RenderJitter, render_scene

logger = logging.getLogger(__name__)


class SceneDataError(Error, ValueError):
    """A scene benchmark folder cannot be read; the message says how to fix it (usually: regenerate it)."""


class SceneDataMissingError(SceneDataError, FileNotFoundError):
    """The folder holds no scene benchmark at all."""


FORMAT = "viewfinder-scenes"
FORMAT_VERSION = 1
INFO_FILE = "scenes.json"
KARPATHY_FILE = "dataset_scenes.json"
QUERY_SPLITS: tuple[str, ...] = ("test", "compositional")
"""Splits that get query sets (and edited scenes for composed queries)."""
CAPTIONS_PER_IMAGE: dict[str, int] = {"train": 5, "val": 5, "test": 3, "compositional": 3}
TEMPLATE_SETS: dict[str, TemplateSet] = {
    "train": "train",
    "val": "train",
    "test": "test",
    "compositional": "test",
}
PNG_COMPRESS_LEVEL = 1

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(images_done, images_total)`` while images are written."""


@dataclass
class QuerySetConfig:
    """How many queries of each type each query split gets (None: one per base scene, where the
    scene allows one)."""

    n_full: int | None = None
    n_partial: int | None = None
    n_binding_swap: int | None = None
    n_relation_swap: int | None = None

    def __post_init__(self) -> None:
        for name in ("n_full", "n_partial", "n_binding_swap", "n_relation_swap"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise SceneConfigError(f"{name}: {value} must be >= 0 (or None)")


@dataclass
class SceneDataset:
    """A scene benchmark read back from disk."""

    root: Path
    info: dict[str, Any]
    scenes: dict[str, dict[str, Scene]]
    """Split -> scene id -> scene (the split's whole collection, edited scenes included)."""
    captions: dict[str, dict[str, list[str]]]
    """Split -> scene id -> captions."""
    queries: dict[str, list[Query]] = field(default_factory=dict)
    """Split -> queries (test and compositional)."""

    def image_path(self, split: str, scene_id: str) -> Path:
        return self.root / "images" / split / f"{scene_id}.png"


def is_scene_dataset(root: Path) -> bool:
    """Whether ``root`` holds a complete scene benchmark (its info file is written last)."""
    info = Path(root) / INFO_FILE
    if not info.is_file():
        return False
    try:
        return json.loads(info.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, json.JSONDecodeError):
        return False


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _write_json(path: Path, data: Any, *, indent: int | None = 1) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=indent) + "\n")  # dumps: the C encoder, unlike dump
        f.flush()
        os.fsync(f.fileno())


def _build_split(
    config: SceneGeneratorConfig,
    split: str,
    n: int,
    n_composed: int,
    query_config: QuerySetConfig,
) -> tuple[list[Scene], list[Query]]:
    """The split's collection (base scenes, then edited scenes) and its queries."""
    if n == 0:
        return [], []
    forbid, require = split_constraints(config, split)
    scenes = generate_scenes(
        n,
        split_rng(config, split, "scenes"),
        config,
        id_prefix=split,
        forbid_pairs=forbid,
        require_pairs=require,
    )
    if split not in QUERY_SPLITS:
        return scenes, []
    composed, edited = make_composed_queries(
        scenes,
        split_rng(config, split, "composed"),
        config,
        n=n_composed,
        forbid_pairs=forbid,
        require_pairs=require,
        prefix=split,
        edited_prefix=f"{split}-edit",
    )
    collection = scenes + edited
    rng = split_rng(config, split, "queries")
    queries: list[Query] = [
        *make_full_queries(scenes, rng, n=query_config.n_full, prefix=split),
        *make_partial_queries(scenes, collection, rng, n=query_config.n_partial, prefix=split),
        *make_binding_swap_queries(scenes, rng, n=query_config.n_binding_swap, prefix=split),
        *make_relation_swap_queries(scenes, rng, n=query_config.n_relation_swap, prefix=split),
        *composed,
    ]
    return collection, queries


def write_scene_dataset(
    root: Path,
    config: SceneGeneratorConfig,
    *,
    n_train: int,
    n_val: int,
    n_test: int,
    n_compositional: int,
    n_composed_queries: int | None = None,
    query_config: QuerySetConfig | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Generate, render and write a scene benchmark into ``root``; returns its info dict.

    ``n_composed_queries``: composed queries (and edited scenes) per query split; None means a
    quarter of the split's base scenes. ``root`` must not exist unless ``overwrite``.
    ``workers``: threads that draw and save images (default: the CPU count, at most 4); the
    output does not depend on it.
    """
    root = Path(root)
    counts = {"train": n_train, "val": n_val, "test": n_test, "compositional": n_compositional}
    for split, n in counts.items():
        if n < 0:
            raise SceneConfigError(f"n_{split}: {n} must be >= 0")
    if n_composed_queries is not None and n_composed_queries < 0:
        raise SceneConfigError(f"n_composed_queries: {n_composed_queries} must be >= 0")
    if workers is not None and workers < 1:
        raise SceneConfigError(f"workers: {workers} must be >= 1")
    if root.exists() and not overwrite:
        raise FileExistsError(f"{root} already exists: choose another folder or pass overwrite=True")
    if n_compositional > 0 and config.held_out_pairs == 0:
        raise SceneConfigError("held_out_pairs: 0 leaves nothing for the compositional split")
    query_config = query_config or QuerySetConfig()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        threads = workers or min(4, os.cpu_count() or 1)
        info = _write_into(tmp, config, counts, n_composed_queries, query_config, progress, threads)
        _replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote scene benchmark to %s: %s", root, info["splits"])
    return info


def ensure_scene_dataset(
    root: Path,
    config: SceneGeneratorConfig,
    *,
    n_train: int,
    n_val: int,
    n_test: int,
    n_compositional: int,
    progress: bool | None = None,
) -> Path:
    """``root``, first generating the benchmark there if it holds none (a partial or foreign
    folder left at ``root`` is replaced). Generating shows a progress bar (images written, rate,
    time left) when ``progress`` is True or, by default, on a terminal."""
    from ..progress import progress_bar

    root = Path(root).expanduser()
    if not is_scene_dataset(root):
        logger.info("generating the scene benchmark into %s", root)
        with progress_bar("generating the scene benchmark (once)", None, "image", progress) as bar:
            write_scene_dataset(
                root,
                config,
                n_train=n_train,
                n_val=n_val,
                n_test=n_test,
                n_compositional=n_compositional,
                overwrite=root.exists(),
                progress=bar.update,
            )
    return root


def _replace_dir(tmp: Path, root: Path) -> None:
    old = None
    if root.exists():
        old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
        root.rename(old)
    tmp.rename(root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _karpathy_entry(scene: Scene, split: str, captions: list[str], image_id: int, first_sentid: int) -> dict[str, Any]:
    sentences = [
        {"raw": text, "tokens": _tokens(text), "imgid": image_id, "sentid": first_sentid + k}
        for k, text in enumerate(captions)
    ]
    return {
        "filename": f"{scene.id}.png",
        "filepath": f"images/{split}",
        "split": split,
        "imgid": image_id,
        "id": scene.id,
        "sentids": [s["sentid"] for s in sentences],
        "sentences": sentences,
    }


def _write_into(
    folder: Path,
    config: SceneGeneratorConfig,
    counts: dict[str, int],
    n_composed_queries: int | None,
    query_config: QuerySetConfig,
    progress: ProgressCallback | None,
    workers: int,
) -> dict[str, Any]:
    built: dict[str, tuple[list[Scene], list[Query]]] = {}
    for split in SPLITS:
        n = counts[split]
        n_composed = n // 4 if n_composed_queries is None else n_composed_queries
        built[split] = _build_split(config, split, n, n_composed, query_config)
    total = sum(len(collection) for collection, _ in built.values())
    jitter = RenderJitter(max_rotation_deg=config.max_rotation_deg, colour_shift=config.colour_shift)

    def draw(job: tuple[Scene, Path]) -> None:
        scene, path = job
        image = render_scene(scene, config.image_size, seed=render_seed(config, scene.id), jitter=jitter)
        image.save(path, compress_level=PNG_COMPRESS_LEVEL)

    karpathy: list[dict[str, Any]] = []
    n_sentences = 0
    split_info: dict[str, Any] = {}
    if progress is not None:
        progress(0, total)  # the scenes are planned: the count of images to write is known
    # Pillow releases the GIL while drawing, resizing, encoding and writing, so a few threads
    # keep the cores busy. Each image depends only on its scene and seed: any thread count gives
    # the same files.
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for split in SPLITS:
            collection, queries = built[split]
            (folder / "images" / split).mkdir(parents=True)
            jobs = [(scene, folder / "images" / split / f"{scene.id}.png") for scene in collection]
            drawn = pool.map(draw, jobs)
            caption_rng = split_rng(config, split, "captions")
            template_set = TEMPLATE_SETS[split]
            with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as manifest:
                for scene, _ in zip(collection, drawn, strict=True):
                    captions = all_captions(scene, template_set, CAPTIONS_PER_IMAGE[split], caption_rng)
                    record = {
                        "id": scene.id,
                        "path": f"images/{split}/{scene.id}.png",
                        "caption": captions,
                        "split": split,
                        "scene": scene.to_dict(),
                    }
                    manifest.write(json.dumps(record) + "\n")
                    karpathy.append(_karpathy_entry(scene, split, captions, len(karpathy), n_sentences))
                    n_sentences += len(captions)
                    if progress is not None:
                        progress(len(karpathy), total)
                    if len(karpathy) % 5000 == 0:
                        logger.info("written %d / %d images", len(karpathy), total)
            split_info[split] = {
                "manifest": f"{split}.jsonl",
                "images": len(collection),
                "base_scenes": counts[split],
                "edited_scenes": len(collection) - counts[split],
                "template_set": template_set,
                "captions_per_image": CAPTIONS_PER_IMAGE[split],
            }
            if split in QUERY_SPLITS:
                (folder / "queries").mkdir(exist_ok=True)
                write_queries(folder / "queries" / f"{split}.jsonl", queries)
                split_info[split]["queries"] = f"queries/{split}.jsonl"
                split_info[split]["query_counts"] = {
                    kind: sum(q.type == kind for q in queries)
                    for kind in ("full", "partial", "binding_swap", "relation_swap", "composed")
                }
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after a failure, drop queued images

    _write_json(folder / KARPATHY_FILE, {"dataset": "scenes", "images": karpathy}, indent=None)
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "seed": config.seed,
        "generator": config.to_dict(),
        "vocabulary": vocabulary(),
        "held_out_pairs": [list(pair) for pair in held_out_pairs(config)],
        "caption_templates": {s: [t.name for t in templates(s)] for s in ("train", "test")},
        "edit_kinds": list(EDIT_KINDS),
        "splits": split_info,
        "karpathy": KARPATHY_FILE,
    }
    _write_json(folder / INFO_FILE, info)  # last: its presence marks the folder complete
    return info


def load_scene_dataset(root: Path) -> SceneDataset:
    """Read a folder written by :func:`write_scene_dataset`."""
    root = Path(root)
    info_path = root / INFO_FILE
    if not info_path.is_file():
        raise SceneDataMissingError(
            f"{root} is not a scene benchmark (no {INFO_FILE}): write one with write_scene_dataset"
        )
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SceneDataError(f"{info_path} is not valid JSON ({exc}): regenerate it") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise SceneDataError(
            f"{info_path}: format {info.get('format') if isinstance(info, dict) else None!r} is not {FORMAT!r}: "
            "not a scene benchmark written by write_scene_dataset"
        )
    if info.get("format_version") != FORMAT_VERSION:
        raise SceneDataError(
            f"{info_path}: format_version {info.get('format_version')} is not {FORMAT_VERSION}; "
            "regenerate it with this version of viewfinder"
        )
    scenes: dict[str, dict[str, Scene]] = {}
    captions: dict[str, dict[str, list[str]]] = {}
    queries: dict[str, list[Query]] = {}
    for split, entry in info["splits"].items():
        scenes[split], captions[split] = {}, {}
        with (root / entry["manifest"]).open(encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                scenes[split][record["id"]] = Scene.from_dict(record["scene"])
                captions[split][record["id"]] = list(record["caption"])
        if "queries" in entry:
            queries[split] = read_queries(root / entry["queries"])
    return SceneDataset(root=root, info=info, scenes=scenes, captions=captions, queries=queries)
