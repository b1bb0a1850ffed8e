"""Robust image decoding: every odd file becomes RGB or an ImageDecodeError with a reason."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from helpers import image_bytes, random_image
from PIL import Image

from viewfinder.pipeline.store.images import ImageDecodeError, decode_image, load_image


def _solid(mode: str, size=(24, 16), colour=None) -> Image.Image:
    return Image.new(mode, size, colour)


# ------------------------------------------------------------------------------ orientation
@pytest.mark.parametrize(("orientation", "rotated"), [(1, False), (3, False), (6, True), (8, True)])
def test_exif_orientation_is_applied(orientation, rotated):
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 0, 0), (0, 0, 10, 20))  # left quarter red
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = decode_image(image_bytes(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.mode == "RGB"
    assert out.size == ((20, 40) if rotated else (40, 20))
    # Where the red quarter lands proves the right transform, not merely a transpose.
    red_at = {1: (2, 10), 3: (37, 10), 6: (10, 2), 8: (10, 37)}[orientation]
    r, g, b = out.getpixel(red_at)
    assert r > 200 and g < 60 and b < 60


# ------------------------------------------------------------------------------ modes -> RGB
def test_palette_image_becomes_rgb():
    image = Image.new("P", (20, 10))
    image.putpalette([0, 0, 255] + [0, 0, 0] * 255)
    out = decode_image(image_bytes(image, "PNG"))
    assert out.mode == "RGB" and out.getpixel((3, 3)) == (0, 0, 255)


def test_palette_with_transparency_becomes_rgb_on_white():
    image = Image.new("P", (20, 10), 0)
    image.putpalette([0, 0, 255] + [0, 0, 0] * 255)
    image.info["transparency"] = 0
    out = decode_image(image_bytes(image, "PNG", transparency=0))
    assert out.mode == "RGB" and out.getpixel((3, 3)) == (255, 255, 255)


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (20, 10), (255, 0, 0, 0))
    image.paste((0, 128, 0, 255), (0, 0, 10, 10))
    out = decode_image(image_bytes(image, "PNG"))
    assert out.mode == "RGB"
    assert out.getpixel((15, 5)) == (255, 255, 255)  # fully transparent -> white, not red or black
    assert out.getpixel((5, 5)) == (0, 128, 0)


def test_cmyk_jpeg_becomes_rgb():
    out = decode_image(image_bytes(_solid("CMYK", colour=(0, 255, 255, 0)), "JPEG", quality=95))
    assert out.mode == "RGB"
    r, g, b = out.getpixel((5, 5))
    assert r > 200 and g < 60 and b < 60


def test_16_bit_greyscale_becomes_rgb_with_full_range():
    values = (np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16)  # 0..59950
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    out = decode_image(image_bytes(image, "PNG"))
    assert out.mode == "RGB"
    assert out.getextrema() == ((0, 255), (0, 255), (0, 255))
    arr = np.asarray(out)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()


@pytest.mark.parametrize(
    ("mode", "colour", "fmt"), [("L", 77, "PNG"), ("LA", (77, 255), "PNG"), ("1", 1, "PNG"), ("I", 300, "TIFF")]
)
def test_greyscale_modes_become_rgb(mode, colour, fmt):
    out = decode_image(image_bytes(_solid(mode, colour=colour), fmt))
    assert out.mode == "RGB"
    r, g, b = out.getpixel((2, 2))
    assert r == g == b


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_common_formats_decode(fmt):
    image = random_image(np.random.default_rng(1), (33, 21))
    out = decode_image(image_bytes(image, fmt))
    assert out.mode == "RGB" and out.size == (33, 21)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (20, 20), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    data = image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(__import__("io").BytesIO(data)) as check:
        assert getattr(check, "n_frames", 1) == 3
    out = decode_image(data)
    assert out.mode == "RGB" and out.getpixel((5, 5)) == (255, 0, 0)


def test_decoded_image_is_independent_of_the_source_buffer():
    out = decode_image(image_bytes(random_image(np.random.default_rng(2), (16, 16)), "PNG"))
    out.load()
    assert out.size == (16, 16)  # usable after decode_image closed its file


# ------------------------------------------------------------------------------ failures
def _reason(data: bytes, **kwargs) -> str:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, **kwargs)
    assert isinstance(info.value, ValueError)
    assert info.value.reason and str(info.value).startswith(info.value.reason)
    return info.value.reason


def test_truncated_jpeg_raises_with_reason():
    jpeg = image_bytes(random_image(np.random.default_rng(3), (64, 64)), "JPEG")
    assert _reason(jpeg[: len(jpeg) // 2]) == "truncated or corrupt"


def test_truncated_png_raises_with_reason():
    png = image_bytes(random_image(np.random.default_rng(4), (64, 64)), "PNG")
    assert _reason(png[: len(png) // 2]) == "truncated or corrupt"


def test_zero_byte_input_raises_with_reason():
    assert _reason(b"") == "empty file"


@pytest.mark.parametrize("data", [b"this is not an image\n", b"\x00" * 100, b"%PDF-1.4\n"])
def test_non_image_raises_with_reason(data):
    assert _reason(data) == "not an image"


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data needed to trigger the size check)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decompression_bomb_over_max_pixels_raises():
    small = image_bytes(random_image(np.random.default_rng(5), (40, 30)), "PNG")
    assert _reason(small, max_pixels=1000) == "too large"  # 1200 pixels > 1000
    assert decode_image(small, max_pixels=1200).size == (40, 30)  # exactly at the limit is fine


def test_decompression_bomb_with_default_limit_raises_before_decoding():
    # 30000 x 30000 = 9e8 pixels, far over PIL's and our default limit; the header alone must be refused.
    reason = _reason(_png_header_only(30000, 30000))
    assert reason == "too large"


def test_max_pixels_is_the_limit_not_pils_global(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # stands in for PIL's 89M default
    data = image_bytes(random_image(np.random.default_rng(6), (40, 30)), "PNG")  # 1200 pixels
    assert decode_image(data, max_pixels=10_000).size == (40, 30)


def test_load_image_reads_files_and_reports_unreadable(tmp_path):
    path = tmp_path / "a.png"
    random_image(np.random.default_rng(7), (12, 9)).save(path)
    assert load_image(path).size == (12, 9)
    with pytest.raises(ImageDecodeError) as info:
        load_image(tmp_path / "missing.png")
    assert info.value.reason == "unreadable"
    with pytest.raises(ImageDecodeError) as info:
        load_image(tmp_path)  # a folder
    assert info.value.reason == "unreadable"
