"""Collection sources: a folder of images or a JSONL manifest, listed as :class:`SourceItem`."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ...errors import Error
from .images import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)

Modality = Literal["image", "text"]


class SourceError(Error, ValueError):
    """The source cannot be read at all (missing folder, unreadable manifest)."""


@dataclass
class SourceItem:
    """One thing to embed: an image file, or (text modality) one caption."""

    key: str
    """Stable user-facing id: the path relative to the folder, or the manifest's ``id``."""
    path: str
    """Absolute path of the image file."""
    size: int
    """File size in bytes (text items: length of the UTF-8 text)."""
    mtime_ns: int
    """Modification time (text items: 0)."""
    text: str | None = None
    """The caption for text items; the first caption of an image item, when the source has one."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Other keys of the manifest line (captions, split, scene graph…)."""
    content_hash: str | None = None
    """Known content hash (text items hash their text); image files are hashed when read."""


@dataclass
class SourceListing:
    items: list[SourceItem]
    problems: list[tuple[str, str]]
    """(where, reason) for entries that cannot become items: bad manifest lines, missing files."""


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def list_source(source: str | Path, modality: Modality = "image", exclude: Path | None = None) -> SourceListing:
    """List a folder (recursively) or a ``.jsonl`` manifest."""
    root = Path(source).expanduser().resolve()
    if not root.exists():
        raise SourceError(f"source not found: {root}")
    if root.is_dir():
        if modality == "text":
            raise SourceError("a text index needs a JSONL manifest with captions, not a folder")
        return _list_folder(root, exclude.resolve() if exclude else None)
    if root.suffix.lower() == ".jsonl":
        return _list_manifest(root, modality)
    raise SourceError(f"source must be a folder or a .jsonl manifest, got {root}")


def _list_folder(root: Path, exclude: Path | None) -> SourceListing:
    items: list[SourceItem] = []
    problems: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d) != exclude)
        for name in sorted(filenames):
            path = here / name
            if path.suffix.lower() not in IMAGE_EXTENSIONS or name.startswith("."):
                continue
            try:
                stat = path.stat()
            except OSError as exc:
                problems.append((str(path), f"unreadable: {exc}"))
                continue
            items.append(SourceItem(path.relative_to(root).as_posix(), str(path), stat.st_size, stat.st_mtime_ns))
    return SourceListing(items, problems)


def _list_manifest(manifest: Path, modality: Modality) -> SourceListing:
    items: list[SourceItem] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    base = manifest.parent
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read manifest {manifest}: {exc}") from exc
    for lineno, line in enumerate(lines, 1):
        where = f"{manifest.name}:{lineno}"
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((where, f"bad JSON: {exc.msg}"))
            continue
        if not isinstance(record, dict) or "path" not in record:
            problems.append((where, "a manifest line needs at least a 'path'"))
            continue
        path = Path(str(record.pop("path"))).expanduser()
        path = path if path.is_absolute() else base / path
        key = str(record.pop("id", path.relative_to(base).as_posix() if path.is_relative_to(base) else path))
        if key in seen:
            problems.append((where, f"duplicate id {key!r}"))
            continue
        seen.add(key)
        captions = record.get("caption", [])
        captions = [captions] if isinstance(captions, str) else [str(c) for c in captions or []]
        if modality == "text":
            if not captions:
                problems.append((where, "no caption to index as text"))
                continue
            for i, caption in enumerate(captions):
                meta = {k: v for k, v in record.items() if k != "caption"}
                meta["image_id"] = key
                items.append(
                    SourceItem(
                        f"{key}#{i}",
                        str(path),
                        len(caption.encode()),
                        0,
                        caption,
                        meta,
                        text_hash(caption),
                    )
                )
            continue
        try:
            stat = path.stat()
        except OSError:
            problems.append((where, f"missing file {path}"))
            continue
        items.append(
            SourceItem(
                key,
                str(path),
                stat.st_size,
                stat.st_mtime_ns,
                captions[0] if captions else None,
                record,
            )
        )
    return SourceListing(items, problems)
