"""Draw a scene graph as an RGB picture.

Shapes are filled polygons (circles are ellipses) drawn at 4x resolution and downsampled with
LANCZOS, which anti-aliases the edges. An optional seed adds a little jitter (a few degrees of
rotation per object, a slight shift of each colour) so that two pictures of the same graph are
not pixel-identical templates; without a seed the drawing is the plain template.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .graph import BACKGROUNDS, COLOURS, Scene, SceneObject

SUPERSAMPLE = 4
"""Drawing happens at this multiple of the output size."""

Point = tuple[float, float]


@dataclass(frozen=True)
class RenderJitter:
    """How much a seeded render may vary from the plain template."""

    max_rotation_deg: float = 8.0
    """Each object is rotated by a uniform angle in ``[-max, +max]`` degrees."""
    colour_shift: int = 12
    """Each RGB channel of each object colour moves by a uniform integer in ``[-shift, +shift]``."""
    background_shift: int = 4
    """Same for the background colour."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_rotation_deg <= 20.0:
            raise ValueError(f"max_rotation_deg: {self.max_rotation_deg} is outside [0, 20]")
        if not 0 <= self.colour_shift <= 40:
            raise ValueError(f"colour_shift: {self.colour_shift} is outside [0, 40]")
        if not 0 <= self.background_shift <= 20:
            raise ValueError(f"background_shift: {self.background_shift} is outside [0, 20]")


def _regular_polygon(n: int, radius: float, start_deg: float) -> list[Point]:
    step = 2 * math.pi / n
    start = math.radians(start_deg)
    return [(radius * math.cos(start + k * step), radius * math.sin(start + k * step)) for k in range(n)]


def _star(points: int = 5, outer: float = 1.0, inner: float = 0.45) -> list[Point]:
    out: list[Point] = []
    for k in range(2 * points):
        r = outer if k % 2 == 0 else inner
        angle = -math.pi / 2 + k * math.pi / points
        out.append((r * math.cos(angle), r * math.sin(angle)))
    return out


def _heart(samples: int = 48) -> list[Point]:
    # The classic parametric heart; y is flipped for image coordinates and the curve is scaled
    # and centred to fit inside the unit circle.
    raw = []
    for k in range(samples):
        t = 2 * math.pi * k / samples
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        raw.append((x, y))
    ys = [y for _, y in raw]
    centre_y = (max(ys) + min(ys)) / 2
    scale = 0.95 / max(math.hypot(x, y - centre_y) for x, y in raw)
    return [(x * scale, (y - centre_y) * scale) for x, y in raw]


def _cross(arm: float = 0.92, half_width: float = 0.3) -> list[Point]:
    a, w = arm, half_width
    return [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w),
            (-a, w), (-a, -w), (-w, -w)]  # fmt: skip


UNIT_SHAPES: dict[str, list[Point]] = {
    "square": [(-0.7, -0.7), (0.7, -0.7), (0.7, 0.7), (-0.7, 0.7)],
    "triangle": [(x, y + 0.15) for x, y in _regular_polygon(3, 1.0, -90.0)],
    "star": _star(),
    "heart": _heart(),
    "cross": _cross(),
    "diamond": [(0.0, -1.0), (0.62, 0.0), (0.0, 1.0), (-0.62, 0.0)],
    "hexagon": _regular_polygon(6, 0.95, 0.0),
}
"""Polygon outlines inside the unit circle, centred on the origin, y pointing down. The circle
is drawn as an ellipse of radius :data:`CIRCLE_RADIUS` instead."""

CIRCLE_RADIUS = 0.88
"""Radius of a drawn circle relative to its bounding circle (so its area matches the others)."""


def _jitter_rgb(rgb: tuple[int, int, int], rng: np.random.Generator | None, shift: int) -> tuple[int, int, int]:
    if rng is None or shift == 0:
        return rgb
    moved = np.asarray(rgb) + rng.integers(-shift, shift + 1, size=3)
    red, green, blue = (int(v) for v in np.clip(moved, 0, 255))
    return red, green, blue


def _draw_object(
    draw: ImageDraw.ImageDraw,
    obj: SceneObject,
    canvas: int,
    fill: tuple[int, int, int],
    rotation_deg: float,
) -> None:
    cx, cy = obj.x * canvas, obj.y * canvas
    radius = obj.radius * canvas  # bounding-circle radius in canvas pixels
    if obj.shape == "circle":
        r = radius * CIRCLE_RADIUS
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        return
    cos_a, sin_a = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    points = [
        (cx + radius * (x * cos_a - y * sin_a), cy + radius * (x * sin_a + y * cos_a))
        for x, y in UNIT_SHAPES[obj.shape]
    ]
    draw.polygon(points, fill=fill)


def render_scene(
    scene: Scene,
    size: int = 64,
    *,
    seed: int | None = None,
    jitter: RenderJitter | None = None,
) -> Image.Image:
    """Draw ``scene`` as a ``size`` x ``size`` RGB image.

    With ``seed`` set, each object gets a small seeded rotation and colour shift (bounded by
    ``jitter``, default :class:`RenderJitter`); the same scene and seed always give the same
    pixels. With ``seed=None`` the picture is the un-jittered template.
    """
    if size < 16:
        raise ValueError(f"size: {size} is too small to draw recognisable shapes (use >= 16)")
    jitter = jitter or RenderJitter()
    rng = np.random.default_rng(seed) if seed is not None else None
    canvas = size * SUPERSAMPLE
    background = _jitter_rgb(BACKGROUNDS[scene.background], rng, jitter.background_shift)
    image = Image.new("RGB", (canvas, canvas), background)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        fill = _jitter_rgb(COLOURS[obj.colour], rng, jitter.colour_shift)
        rotation = 0.0
        if rng is not None:
            rotation = float(rng.uniform(-jitter.max_rotation_deg, jitter.max_rotation_deg))
        _draw_object(draw, obj, canvas, fill, rotation)
    # reducing_gap: a 2x box reduction first, then LANCZOS; ~2.5x faster than LANCZOS from the
    # full canvas, within a few grey levels of it.
    return image.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0)
