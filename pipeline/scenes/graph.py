"""The scene graph: vocabulary, objects, scenes, relations and facts.

A scene is a background colour plus a few objects. Each object has a shape, a colour, a size and
a centre stored as normalised image coordinates ``(x, y)`` in ``[0, 1]`` with the origin at the
top left (``y`` grows downwards, as in image space). The coarse, nameable position of an object is
the cell of a 3x3 grid holding its centre.

Invariants of every scene the generator makes (checked by :func:`scene_problems`):

* no two objects share the same ``(shape, colour)`` pair, so "the red circle" always names one
  object and every description is unambiguous;
* no two objects share a grid cell, so "the object in the top left" names at most one object;
* objects do not overlap and lie fully inside the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "heart",
    "cross",
    "diamond",
    "hexagon",
)
"""Object shapes, in a fixed order (the order seeds depend on)."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (228, 30, 38),
    "orange": (255, 140, 0),
    "yellow": (250, 225, 30),
    "green": (40, 190, 60),
    "cyan": (0, 210, 225),
    "blue": (45, 95, 245),
    "purple": (160, 60, 225),
    "pink": (255, 120, 190),
}
"""Object colours and their RGB values: hues far apart, all bright enough to stand out on every
background in :data:`BACKGROUNDS`."""

SIZES: tuple[str, ...] = ("small", "large")
"""Object sizes."""

SIZE_DIAMETERS: dict[str, float] = {"small": 0.22, "large": 0.40}
"""Diameter of an object's bounding circle as a fraction of the image side (at 64 px: ~14 px and
~26 px). Shapes are drawn inside this circle; overlap checks use it."""

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (12, 12, 12),
    "dark grey": (72, 72, 76),
    "brown": (92, 58, 32),
}
"""Background colours: dark, so that every object colour contrasts with every background."""

POSITIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "centre",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
"""Names of the 3x3 grid cells, row by row from the top left (index = 3 * row + column)."""

POSITION_PHRASES: dict[str, str] = {
    "top left": "in the top left",
    "top": "at the top",
    "top right": "in the top right",
    "left": "on the left",
    "centre": "in the centre",
    "right": "on the right",
    "bottom left": "in the bottom left",
    "bottom": "at the bottom",
    "bottom right": "in the bottom right",
}
"""How a position reads after a noun phrase: "a red circle *in the top left*"."""

RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
"""Spatial relations between two objects."""

RELATION_MARGIN: float = 0.15
"""Two centres must differ by more than this (normalised) along an axis for a relation to hold,
so that every stated relation is clearly visible."""

OBJECT_GAP: float = 0.03
"""Minimum empty space between the bounding circles of two objects (normalised)."""

BORDER: float = 0.01
"""Minimum empty space between an object's bounding circle and the image border (normalised)."""


def position_of(x: float, y: float) -> str:
    """Name of the 3x3 grid cell holding the normalised point ``(x, y)``."""
    column = min(int(x * 3), 2)
    row = min(int(y * 3), 2)
    return POSITIONS[3 * row + column]


def cell_bounds(position: str) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` of a named grid cell in normalised coordinates."""
    index = POSITIONS.index(position)
    row, column = divmod(index, 3)
    return column / 3, row / 3, (column + 1) / 3, (row + 1) / 3


def with_article(phrase: str) -> str:
    """Prefix ``a`` or ``an``: ``with_article("orange star") == "an orange star"``."""
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene."""

    shape: str
    """One of :data:`SHAPES`."""
    colour: str
    """One of :data:`COLOURS`."""
    size: str
    """One of :data:`SIZES`."""
    x: float
    """Centre, normalised horizontal coordinate in ``[0, 1]`` (0 = left edge)."""
    y: float
    """Centre, normalised vertical coordinate in ``[0, 1]`` (0 = top edge)."""

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"shape: {self.shape!r} is not one of {SHAPES}")
        if self.colour not in COLOURS:
            raise ValueError(f"colour: {self.colour!r} is not one of {tuple(COLOURS)}")
        if self.size not in SIZES:
            raise ValueError(f"size: {self.size!r} is not one of {SIZES}")
        for name in ("x", "y"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: {value} is outside [0, 1]")

    @property
    def position(self) -> str:
        """Coarse named position (a cell of the 3x3 grid)."""
        return position_of(self.x, self.y)

    @property
    def pair(self) -> tuple[str, str]:
        """The ``(shape, colour)`` pair that identifies the object within its scene."""
        return (self.shape, self.colour)

    @property
    def radius(self) -> float:
        """Radius of the bounding circle (normalised)."""
        return SIZE_DIAMETERS[self.size] / 2

    def noun_phrase(self, *, size: bool = True, colour: bool = True) -> str:
        """``"small red circle"`` (no article); size and colour can be left out."""
        words = ([self.size] if size else []) + ([self.colour] if colour else []) + [self.shape]
        return " ".join(words)

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "colour": self.colour,
            "size": self.size,
            "x": self.x,
            "y": self.y,
            "position": self.position,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SceneObject:
        # ``position`` is derived from x, y and only written for readers of the JSON.
        return cls(
            shape=data["shape"],
            colour=data["colour"],
            size=data["size"],
            x=float(data["x"]),
            y=float(data["y"]),
        )


Fact = tuple[str, ...]
"""A hashable attribute fact about a scene, e.g. ``("colour shape", "red", "circle")``."""


@dataclass
class Scene:
    """A background and its objects, with a stable string id."""

    id: str
    background: str
    """One of :data:`BACKGROUNDS`."""
    objects: list[SceneObject] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance, e.g. ``{"edited_from": "test-000012"}`` for an edited scene."""

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background: {self.background!r} is not one of {tuple(BACKGROUNDS)}")

    def pairs(self) -> set[tuple[str, str]]:
        """The ``(shape, colour)`` pairs present in the scene."""
        return {obj.pair for obj in self.objects}

    def relations(self) -> list[tuple[int, str, int]]:
        """Spatial facts ``(i, relation, j)`` between object indices, both directions.

        ``(i, "left of", j)`` holds when ``x_i < x_j - RELATION_MARGIN``; ``"above"`` likewise on
        ``y`` (image coordinates, so *above* means a smaller ``y``).
        """
        facts: list[tuple[int, str, int]] = []
        for i, a in enumerate(self.objects):
            for j, b in enumerate(self.objects):
                if i == j:
                    continue
                if a.x < b.x - RELATION_MARGIN:
                    facts.append((i, "left of", j))
                if a.x > b.x + RELATION_MARGIN:
                    facts.append((i, "right of", j))
                if a.y < b.y - RELATION_MARGIN:
                    facts.append((i, "above", j))
                if a.y > b.y + RELATION_MARGIN:
                    facts.append((i, "below", j))
        return facts

    def facts(self) -> frozenset[Fact]:
        """Attribute facts that a person could check by looking at the picture.

        Background, object count, each object's single attributes and attribute combinations,
        and the relations between objects named by colour and shape. Two scenes that look alike
        share most facts, so the Jaccard similarity of fact sets grades how close they are.
        """
        out: set[Fact] = {("background", self.background), ("count", str(len(self.objects)))}
        for obj in self.objects:
            out.update(
                {
                    ("shape", obj.shape),
                    ("colour", obj.colour),
                    ("size", obj.size),
                    ("position", obj.position),
                    ("colour shape", obj.colour, obj.shape),
                    ("size shape", obj.size, obj.shape),
                    ("shape position", obj.shape, obj.position),
                    ("object", obj.size, obj.colour, obj.shape, obj.position),
                }
            )
        for i, relation, j in self.relations():
            a, b = self.objects[i], self.objects[j]
            out.add(("relation", a.colour, a.shape, relation, b.colour, b.shape))
        return frozenset(out)

    def with_objects(self, objects: list[SceneObject], *, id: str, **metadata: Any) -> Scene:
        """A copy with other objects and id (metadata merged); the original is not changed."""
        return replace(self, id=id, objects=list(objects), metadata={**self.metadata, **metadata})

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "background": self.background,
            "objects": [obj.to_dict() for obj in self.objects],
        }
        if self.metadata:
            data["metadata"] = dict(self.metadata)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scene:
        return cls(
            id=str(data["id"]),
            background=data["background"],
            objects=[SceneObject.from_dict(obj) for obj in data["objects"]],
            metadata=dict(data.get("metadata", {})),
        )


def objects_overlap(a: SceneObject, b: SceneObject, gap: float = OBJECT_GAP) -> bool:
    """Whether the bounding circles of two objects come closer than ``gap``."""
    return math.hypot(a.x - b.x, a.y - b.y) < a.radius + b.radius + gap


def inside_image(obj: SceneObject, border: float = BORDER) -> bool:
    """Whether an object's bounding circle lies fully inside the image, ``border`` away."""
    r = obj.radius + border
    return r <= obj.x <= 1 - r and r <= obj.y <= 1 - r


def scene_problems(scene: Scene) -> list[str]:
    """Every broken invariant of a scene, in words (an empty list for a valid scene)."""
    problems: list[str] = []
    if not scene.objects:
        problems.append("the scene has no objects")
    seen_pairs: set[tuple[str, str]] = set()
    seen_cells: set[str] = set()
    for i, obj in enumerate(scene.objects):
        if obj.pair in seen_pairs:
            problems.append(f"object {i}: a second {obj.colour} {obj.shape}")
        if obj.position in seen_cells:
            problems.append(f"object {i}: a second object {POSITION_PHRASES[obj.position]}")
        if not inside_image(obj):
            problems.append(f"object {i}: not fully inside the image")
        seen_pairs.add(obj.pair)
        seen_cells.add(obj.position)
        for j in range(i):
            if objects_overlap(obj, scene.objects[j]):
                problems.append(f"objects {j} and {i} overlap")
    return problems


def fits_in(scene: Scene, candidate: SceneObject, *, ignore: int | None = None) -> bool:
    """Whether ``candidate`` can join ``scene`` (object ``ignore`` left out) keeping invariants."""
    if not inside_image(candidate):
        return False
    for i, obj in enumerate(scene.objects):
        if i == ignore:
            continue
        if obj.pair == candidate.pair or obj.position == candidate.position:
            return False
        if objects_overlap(obj, candidate):
            return False
    return True


def vocabulary() -> dict[str, Any]:
    """The whole vocabulary as JSON-ready data (written into a dataset's info file)."""
    return {
        "shapes": list(SHAPES),
        "colours": {name: list(rgb) for name, rgb in COLOURS.items()},
        "sizes": list(SIZES),
        "size_diameters": dict(SIZE_DIAMETERS),
        "backgrounds": {name: list(rgb) for name, rgb in BACKGROUNDS.items()},
        "positions": list(POSITIONS),
        "relations": list(RELATIONS),
        "relation_margin": RELATION_MARGIN,
    }
