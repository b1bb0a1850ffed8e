"""Contact sheets: each query with its top hits as thumbnails, the target marked (and, on reranked
rows, each hit's rank before reranking)."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..store.images import ImageDecodeError, load_image


@dataclass
class SheetRow:
    label: str
    """The query as shown (text, or a note for an image query)."""
    hit_paths: list[str]
    hit_keys: list[str]
    target_keys: set[str] = field(default_factory=set)
    """Hits drawn with a thick green frame (the query's target)."""
    relevant_keys: set[str] = field(default_factory=set)
    """Hits drawn with a thin green frame (they match the query too)."""
    query_image: str | None = None
    previous_ranks: dict[str, int] | None = None
    """Hit key -> its rank before reranking (a reranked row: each hit says how it moved)."""


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _thumb(path: str, size: int) -> Image.Image:
    try:
        return load_image(path).resize((size, size), Image.Resampling.NEAREST)
    except ImageDecodeError:
        return Image.new("RGB", (size, size), (90, 0, 0))


def render_contact_sheet(rows: list[SheetRow], path: Path, thumb: int = 96, label_width: int = 300) -> Path:
    """Write a PNG with one row per query; returns ``path``."""
    pad, frame = 8, 4
    n_cols = max((len(r.hit_paths) for r in rows), default=1) + 1
    width = label_width + n_cols * (thumb + pad) + pad
    height = pad + len(rows) * (thumb + 2 * pad + 14)
    sheet = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    font, small = _font(14), _font(11)
    y = pad
    for row in rows:
        draw.multiline_text((pad, y), "\n".join(textwrap.wrap(row.label, 36)[:6]), fill=(20, 20, 20), font=font)
        x = label_width
        if row.query_image:
            sheet.paste(_thumb(row.query_image, thumb), (x, y))
            draw.text((x, y + thumb + 2), "query image", fill=(60, 60, 160), font=small)
        x += thumb + pad
        for rank, (hit, key) in enumerate(zip(row.hit_paths, row.hit_keys, strict=True), 1):
            sheet.paste(_thumb(hit, thumb), (x, y))
            if key in row.target_keys:
                draw.rectangle([x - 1, y - 1, x + thumb, y + thumb], outline=(0, 170, 0), width=frame)
            elif key in row.relevant_keys:
                draw.rectangle([x - 1, y - 1, x + thumb, y + thumb], outline=(120, 200, 120), width=2)
            mark = " target" if key in row.target_keys else ""
            label = f"#{rank}{mark}"
            if row.previous_ranks is not None:
                before = row.previous_ranks.get(key)
                label += " new" if before is None else "" if before == rank else f" (#{before})"
            colour = (0, 120, 0) if mark else (80, 80, 80)
            if row.previous_ranks is not None and row.previous_ranks.get(key) != rank:
                colour = (0, 120, 0) if mark else (170, 90, 0)  # moved by reranking
            draw.text((x, y + thumb + 2), label, fill=colour, font=small)
            x += thumb + pad
        y += thumb + 2 * pad + 14
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
