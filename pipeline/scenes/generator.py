"""Seeded random scene graphs, and the held-out (shape, colour) pairs of the compositional split.

Everything is drawn from a ``numpy.random.Generator`` passed in by the caller; nothing touches
global random state. :func:`split_rng` gives each split its own stream, so changing the size of
one split does not change the scenes of another.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ...errors import Error
from .graph import (
    BACKGROUNDS,
    BORDER,
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZE_DIAMETERS,
    SIZES,
    Scene,
    SceneObject,
    cell_bounds,
    fits_in,
)

Pair = tuple[str, str]
"""A ``(shape, colour)`` pair."""

ALL_PAIRS: tuple[Pair, ...] = tuple((shape, colour) for shape in SHAPES for colour in COLOURS)

SPLITS: tuple[str, ...] = ("train", "val", "test", "compositional")
"""The benchmark's splits. The first three never contain a held-out pair; every scene of
``compositional`` contains at least one."""

MAX_OBJECTS_LIMIT = 4
"""Most objects a scene can hold: each needs its own grid cell and room around it."""


class SceneConfigError(Error, ValueError):
    """A scene generator or benchmark setting is out of range; the message names the field."""


@dataclass
class SceneGeneratorConfig:
    """How scenes are drawn. Saved into a dataset's ``scenes.json``."""

    seed: int = 0
    """Root seed: scenes, held-out pairs, captions, queries and render jitter derive from it."""
    image_size: int = 64
    """Side of the rendered square images in pixels."""
    min_objects: int = 1
    """Fewest objects in a scene."""
    max_objects: int = 3
    """Most objects in a scene (at most :data:`MAX_OBJECTS_LIMIT`)."""
    held_out_pairs: int = 8
    """How many (shape, colour) pairs are held out of train/val/test for the compositional split.
    Chosen so that each shape and each colour is held out about equally often."""
    cell_margin: float = 0.03
    """An object's centre keeps this far (normalised) from the borders of its grid cell, so its
    named position is never a borderline call."""
    max_rotation_deg: float = 8.0
    """Render jitter: uniform rotation of each object in degrees, either way."""
    colour_shift: int = 12
    """Render jitter: uniform shift of each RGB channel of an object's colour."""

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise SceneConfigError(f"image_size: {self.image_size} is too small (use >= 32)")
        if self.min_objects < 1:
            raise SceneConfigError(f"min_objects: {self.min_objects} must be >= 1")
        if not self.min_objects <= self.max_objects <= MAX_OBJECTS_LIMIT:
            raise SceneConfigError(
                f"max_objects: {self.max_objects} must lie in [min_objects={self.min_objects}, {MAX_OBJECTS_LIMIT}]"
            )
        if not 0 <= self.held_out_pairs <= len(ALL_PAIRS) // 2:
            raise SceneConfigError(f"held_out_pairs: {self.held_out_pairs} must lie in [0, {len(ALL_PAIRS) // 2}]")
        if not 0.0 <= self.cell_margin < 1 / 6:
            raise SceneConfigError(f"cell_margin: {self.cell_margin} must lie in [0, 1/6)")
        if not 0.0 <= self.max_rotation_deg <= 20.0:
            raise SceneConfigError(f"max_rotation_deg: {self.max_rotation_deg} must lie in [0, 20]")
        if not 0 <= self.colour_shift <= 40:
            raise SceneConfigError(f"colour_shift: {self.colour_shift} must lie in [0, 40]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SceneGeneratorConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise SceneConfigError(f"unknown SceneGeneratorConfig fields: {sorted(unknown)}")
        return cls(**data)


def _stream(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _text_key(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def split_rng(config: SceneGeneratorConfig, split: str, purpose: str = "scenes") -> np.random.Generator:
    """An independent random stream for one split and one purpose (scenes, captions, queries)."""
    return _stream(config.seed, _text_key(split), _text_key(purpose))


def render_seed(config: SceneGeneratorConfig, scene_id: str) -> int:
    """Seed of a scene's render jitter: fixed by the root seed and the scene id alone."""
    return int(_stream(config.seed, _text_key("render"), _text_key(scene_id)).integers(2**31))


def held_out_pairs(config: SceneGeneratorConfig) -> tuple[Pair, ...]:
    """The (shape, colour) pairs held out for the compositional split, sorted.

    Fixed by ``config.seed``. Each shape and each colour is held out at most
    ``ceil(held_out_pairs / 8)`` times, so every shape and colour still appears in training with
    other partners.
    """
    k = config.held_out_pairs
    if k == 0:
        return ()
    per_item = -(-k // min(len(SHAPES), len(COLOURS)))
    rng = _stream(config.seed, _text_key("held-out pairs"))
    for _ in range(1000):
        chosen: list[Pair] = []
        shape_count = dict.fromkeys(SHAPES, 0)
        colour_count = dict.fromkeys(COLOURS, 0)
        for index in rng.permutation(len(ALL_PAIRS)):
            shape, colour = ALL_PAIRS[index]
            if shape_count[shape] < per_item and colour_count[colour] < per_item:
                chosen.append((shape, colour))
                shape_count[shape] += 1
                colour_count[colour] += 1
                if len(chosen) == k:
                    return tuple(sorted(chosen))
    raise RuntimeError(f"could not choose {k} balanced held-out pairs")  # pragma: no cover


def sample_object(
    rng: np.random.Generator,
    scene: Scene,
    config: SceneGeneratorConfig,
    *,
    pairs: Collection[Pair],
    size: str | None = None,
    position: str | None = None,
    ignore: int | None = None,
    attempts: int = 30,
) -> SceneObject | None:
    """A new object that fits into ``scene`` (object ``ignore`` left out), or None.

    The (shape, colour) pair is drawn from ``pairs`` minus those already in the scene; size and
    grid cell are drawn unless given. The centre is uniform inside the cell, ``cell_margin`` from
    its borders, with the object fully inside the image and clear of the others.
    """
    taken_pairs = {obj.pair for i, obj in enumerate(scene.objects) if i != ignore}
    taken_cells = {obj.position for i, obj in enumerate(scene.objects) if i != ignore}
    free_pairs = [pair for pair in pairs if pair not in taken_pairs]
    free_cells = [cell for cell in POSITIONS if cell not in taken_cells]
    if position is not None:
        free_cells = [position] if position in free_cells else []
    if not free_pairs or not free_cells:
        return None
    for _ in range(attempts):
        shape, colour = free_pairs[int(rng.integers(len(free_pairs)))]
        object_size = size if size is not None else SIZES[int(rng.integers(len(SIZES)))]
        cell = free_cells[int(rng.integers(len(free_cells)))]
        x0, y0, x1, y1 = cell_bounds(cell)
        reach = SIZE_DIAMETERS[object_size] / 2 + BORDER
        lo_x, hi_x = max(x0 + config.cell_margin, reach), min(x1 - config.cell_margin, 1 - reach)
        lo_y, hi_y = max(y0 + config.cell_margin, reach), min(y1 - config.cell_margin, 1 - reach)
        if lo_x > hi_x or lo_y > hi_y:
            continue
        candidate = SceneObject(
            shape=shape,
            colour=colour,
            size=object_size,
            x=float(rng.uniform(lo_x, hi_x)),
            y=float(rng.uniform(lo_y, hi_y)),
        )
        if fits_in(scene, candidate, ignore=ignore):
            return candidate
    return None


def generate_scene(
    rng: np.random.Generator,
    scene_id: str,
    config: SceneGeneratorConfig,
    *,
    forbid_pairs: Collection[Pair] = (),
    require_pairs: Collection[Pair] = (),
) -> Scene:
    """One random scene: no pair of ``forbid_pairs``; at least one of ``require_pairs`` if given."""
    forbidden = set(forbid_pairs)
    allowed = [pair for pair in ALL_PAIRS if pair not in forbidden]
    required = [pair for pair in sorted(require_pairs) if pair not in forbidden]
    if require_pairs and not required:
        raise ValueError("require_pairs: every required pair is also forbidden")
    backgrounds = tuple(BACKGROUNDS)
    for _ in range(1000):
        n_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
        scene = Scene(id=scene_id, background=backgrounds[int(rng.integers(len(backgrounds)))])
        for k in range(n_objects):
            obj = sample_object(rng, scene, config, pairs=required if k == 0 and required else allowed)
            if obj is None:
                break
            scene.objects.append(obj)
        if len(scene.objects) == n_objects:
            # The required object was drawn first; shuffle so list order carries no meaning.
            order = rng.permutation(n_objects)
            scene.objects = [scene.objects[i] for i in order]
            return scene
    raise RuntimeError(f"could not place {config.max_objects} objects; lower max_objects")


def generate_scenes(
    n: int,
    rng: np.random.Generator,
    config: SceneGeneratorConfig | None = None,
    *,
    id_prefix: str = "scene",
    start: int = 0,
    forbid_pairs: Collection[Pair] = (),
    require_pairs: Collection[Pair] = (),
) -> list[Scene]:
    """``n`` random scenes with ids ``f"{id_prefix}-{i:06d}"`` for ``i`` from ``start``.

    ``forbid_pairs``: (shape, colour) pairs no scene may contain (the held-out pairs, for
    train/val/test). ``require_pairs``: each scene contains at least one of these (the
    compositional split).
    """
    if n < 0:
        raise ValueError(f"n: {n} must be >= 0")
    config = config or SceneGeneratorConfig()
    return [
        generate_scene(
            rng,
            f"{id_prefix}-{i:06d}",
            config,
            forbid_pairs=forbid_pairs,
            require_pairs=require_pairs,
        )
        for i in range(start, start + n)
    ]


def split_constraints(config: SceneGeneratorConfig, split: str) -> tuple[frozenset[Pair], frozenset[Pair]]:
    """``(forbid_pairs, require_pairs)`` of a split."""
    if split not in SPLITS:
        raise ValueError(f"split: {split!r} is not one of {SPLITS}")
    held_out = frozenset(held_out_pairs(config))
    if split == "compositional":
        if not held_out:
            raise ValueError("held_out_pairs: the compositional split needs held_out_pairs > 0")
        return frozenset(), held_out
    return held_out, frozenset()


def satisfies_constraints(scene: Scene, forbid_pairs: Collection[Pair], require_pairs: Collection[Pair]) -> bool:
    """Whether a scene avoids ``forbid_pairs`` and (if any) holds one of ``require_pairs``."""
    pairs = scene.pairs()
    if pairs & set(forbid_pairs):
        return False
    return not require_pairs or bool(pairs & set(require_pairs))
