"""Atomic file writes: write aside, fsync, rename, fsync the folder."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .faults import fault_point


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)``, fsync the result and rename it over ``path``.

    A crash at any point leaves either the old file or the new one, never a half-written file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    kind = path.suffix.lstrip(".") or "file"  # the fault points' name: faiss, npy, json
    try:
        writer(tmp)
        fault_point(f"{kind}-written")
        os.chmod(tmp, 0o644)
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        fault_point(f"{kind}-fsynced")
        os.replace(tmp, path)
        fsync_dir(path.parent)
        fault_point(f"{kind}-renamed")
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
