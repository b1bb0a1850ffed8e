"""Build adapters from model entries: the one place where a config becomes a model object."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from viewfinder.adapters.base import ImageTextEncoder
from viewfinder.pipeline.config import EncoderEntry, from_dict, load_encoder_entry, to_plain


def load_encoder(entry: EncoderEntry | str | dict[str, Any]) -> ImageTextEncoder:
    """Load the encoder a model entry describes (an entry, a packaged name, a YAML path, or a dict)."""
    if not isinstance(entry, EncoderEntry):
        entry = load_encoder_entry(entry)
    if entry.family == "open_clip":
        from viewfinder.adapters.open_clip_encoder import load_open_clip_encoder

        return load_open_clip_encoder(entry)
    raise ValueError(f"unknown encoder family {entry.family!r}")


def portable_entry(entry: EncoderEntry) -> dict[str, Any]:
    """The entry as a dict to record in an index manifest, with file paths made absolute."""
    data = to_plain(entry)
    if entry.weights in ("file", "local-dir") and entry.path:
        data["path"] = str(Path(entry.path).expanduser().resolve())
    if entry.arch and entry.arch.endswith(".json") and os.path.exists(entry.arch):
        data["arch"] = str(Path(entry.arch).resolve())
    return data


def entry_from_manifest(data: dict[str, Any]) -> EncoderEntry:
    return from_dict(EncoderEntry, data, "index manifest: encoder_entry")
