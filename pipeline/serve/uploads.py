"""Uploaded query images: checked by their header (type, pixels) before anything decodes them."""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

from fastapi import UploadFile
from PIL import Image, UnidentifiedImageError

from ..store.search import QueryError
from .errors import PayloadTooLargeError, UnsupportedUploadError

ACCEPTED_TYPES = ("image/", "application/octet-stream")
"""Content types an uploaded file may declare (what browsers and HTTP clients send for a picture)."""


async def read_upload(file: UploadFile, max_bytes: int, max_pixels: int) -> bytes:
    """The bytes of an uploaded image, or a 4xx error: a declared type that is not an image (415), more
    than ``max_bytes`` (413), a header that no image format reads (415), more than ``max_pixels``
    (413: a decompression bomb is refused before it is decoded), an empty or unreadable file (400)."""
    declared = (file.content_type or "application/octet-stream").lower()
    if not declared.startswith(ACCEPTED_TYPES):
        raise UnsupportedUploadError(f"the uploaded file is {declared!r}, not an image: upload a PNG, JPEG, ...")
    data = await file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"the uploaded image is over the {max_bytes}-byte limit")
    if not data:
        raise QueryError("the uploaded image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below applies
            with Image.open(io.BytesIO(data)) as probe:  # reads the header only
                width, height = probe.size
    except UnidentifiedImageError:
        raise UnsupportedUploadError("the uploaded file is not an image any decoder here reads") from None
    except Image.DecompressionBombError as exc:
        raise PayloadTooLargeError(f"the uploaded image has too many pixels: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise QueryError(f"the uploaded image cannot be read: {exc}") from None
    if width * height > max_pixels:
        raise PayloadTooLargeError(f"the uploaded image is {width}x{height}, over the {max_pixels}-pixel limit")
    return data


def save_upload(data: bytes, folder: Path) -> Path:
    """Write checked upload bytes to a new private file in ``folder``."""
    fd, name = tempfile.mkstemp(suffix=".upload", dir=folder)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return Path(name)
