"""Hard-negative twins for training: a scene changed in exactly one fact.

A contrastive batch of random scenes can be told apart by colour alone, so a model trained on it
never has to look at shapes or positions. A *twin* differs from its scene in one thing only —
one object's shape, colour, size or grid cell, or two objects' colours swapped (attribute
binding) — and when scene and twin share a batch, the only way to match each caption to its
picture is to see that one thing.

Twins keep every scene invariant (:func:`~.graph.scene_problems`) and avoid the forbidden
(held-out) pairs, so training on them never shows the compositional split's pairs.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Literal

import numpy as np

from .edits import sample_edit
from .generator import Pair, SceneGeneratorConfig, satisfies_constraints
from .graph import SHAPES, Scene, scene_problems

TwinKind = Literal["reshape", "recolour", "resize", "move", "swap_colours", "swap_sizes", "swap_places"]
TWIN_KINDS: tuple[TwinKind, ...] = (
    "reshape",
    "recolour",
    "resize",
    "move",
    "swap_colours",
    "swap_sizes",
    "swap_places",
)
"""Every kind of change; ``swap_sizes`` is the other attribute-binding swap, ``swap_places`` swaps two
objects' centres, so every relation between them is reversed (a relation swap seen from the image)."""
_SWAPPED: dict[str, tuple[str, ...]] = {"swap_colours": ("colour",), "swap_sizes": ("size",), "swap_places": ("x", "y")}
"""The swap kinds, and the object fields two objects exchange in each."""


def _reshape(scene: Scene, rng: np.random.Generator, forbidden: set[Pair], new_id: str) -> Scene | None:
    i = int(rng.integers(len(scene.objects)))
    old = scene.objects[i]
    taken = {obj.pair for k, obj in enumerate(scene.objects) if k != i}
    shapes = [s for s in SHAPES if s != old.shape and (s, old.colour) not in taken | forbidden]
    if not shapes:
        return None
    new = replace(old, shape=shapes[int(rng.integers(len(shapes)))])
    objects = [new if k == i else obj for k, obj in enumerate(scene.objects)]
    return scene.with_objects(objects, id=new_id, twin_of=scene.id, twin="reshape")


def _swap(scene: Scene, rng: np.random.Generator, kind: TwinKind, new_id: str) -> Scene | None:
    """Two objects exchange their colours (``swap_colours``), sizes (``swap_sizes``) or centres
    (``swap_places``): the same attributes, bound to other objects."""
    fields = _SWAPPED[kind]
    pairs = [
        (i, j)
        for i in range(len(scene.objects))
        for j in range(i + 1, len(scene.objects))
        if any(getattr(scene.objects[i], f) != getattr(scene.objects[j], f) for f in fields)
    ]
    if not pairs:
        return None
    i, j = pairs[int(rng.integers(len(pairs)))]
    a, b = scene.objects[i], scene.objects[j]
    swapped = {
        i: replace(a, **{f: getattr(b, f) for f in fields}),
        j: replace(b, **{f: getattr(a, f) for f in fields}),
    }
    objects = [swapped.get(k, obj) for k, obj in enumerate(scene.objects)]
    return scene.with_objects(objects, id=new_id, twin_of=scene.id, twin=kind)


def sample_twin(
    scene: Scene,
    rng: np.random.Generator,
    config: SceneGeneratorConfig,
    *,
    new_id: str,
    forbid_pairs: Collection[Pair] = (),
    kinds: Collection[TwinKind] = TWIN_KINDS,
    attempts: int = 20,
) -> Scene | None:
    """A scene that differs from ``scene`` in exactly one fact, or None if none was found.

    The kind of change is drawn uniformly from ``kinds`` on each attempt; the twin's metadata
    records ``twin_of`` (the scene's id) and ``twin`` (the kind).
    """
    forbidden = set(forbid_pairs)
    chosen = [k for k in TWIN_KINDS if k in set(kinds)]
    if not chosen:
        raise ValueError(f"kinds: none of {sorted(kinds)} is one of {TWIN_KINDS}")
    for _ in range(attempts):
        kind = chosen[int(rng.integers(len(chosen)))]
        if kind == "reshape":
            twin = _reshape(scene, rng, forbidden, new_id)
        elif kind in _SWAPPED:
            twin = _swap(scene, rng, kind, new_id)
        else:
            found = sample_edit(scene, rng, config, new_id=new_id, forbid_pairs=forbidden, kinds=[kind], attempts=1)
            twin = (
                None
                if found is None
                else found[1].with_objects(found[1].objects, id=new_id, twin_of=scene.id, twin=kind)
            )
        if twin is None or scene_problems(twin) or not satisfies_constraints(twin, forbidden, ()):
            continue
        return twin
    return None
