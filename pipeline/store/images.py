"""Robust image decoding: whatever a folder holds becomes an RGB image or a clear reason why not."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from ...errors import Error

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


class ImageDecodeError(Error, ValueError):
    """An image could not be decoded; ``reason`` is a short machine-friendly label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def decode_image(data: bytes, max_pixels: int = 89_478_485) -> Image.Image:
    """Decode image bytes to an RGB :class:`PIL.Image.Image`.

    EXIF orientation is applied; palette, RGBA (composited on white), CMYK, 16-bit and greyscale
    images become RGB; an animated file gives its first frame. Raises :class:`ImageDecodeError`
    for empty, truncated, non-image and over-large (decompression bomb) input.
    """
    if not data:
        raise ImageDecodeError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                if width * height > max_pixels:
                    raise ImageDecodeError(
                        "too large",
                        f"{width}x{height} exceeds the {max_pixels}-pixel limit (index.max_image_pixels)",
                    )
                probe.seek(0)  # first frame of an animation
                probe.load()
                image = ImageOps.exif_transpose(probe) or probe
                return _to_rgb(image)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not an image", "unrecognised file format") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError("too large", str(exc)) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError("truncated or corrupt", str(exc)) from exc


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit greyscale: rescale to 8 bits using the actual value range.
        lo, hi = image.getextrema()
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        image = image.point(lambda v: (v - lo) * scale).convert("L")
        return image.convert("RGB")
    if mode == "P" or mode == "PA":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | Path, max_pixels: int = 89_478_485) -> Image.Image:
    """Read and decode an image file (see :func:`decode_image`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError("unreadable", str(exc)) from exc
    return decode_image(data, max_pixels)
