"""Edits of a scene graph and their instructions, for composed queries (reference + edit).

An edit changes exactly one thing: one object's colour, size or position, removes one object, or
adds one. :func:`sample_edit` draws an edit that keeps the scene's invariants and its split's
constraints, and returns it together with the edited scene. Objects keep their list indices
(an added object goes last; a removed one leaves the others in order).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from .generator import ALL_PAIRS, Pair, SceneGeneratorConfig, sample_object, satisfies_constraints
from .graph import (
    COLOURS,
    POSITION_PHRASES,
    POSITIONS,
    SIZES,
    Scene,
    SceneObject,
    scene_problems,
    with_article,
)

EditKind = Literal["recolour", "resize", "move", "remove", "add"]
EDIT_KINDS: tuple[EditKind, ...] = ("recolour", "resize", "move", "remove", "add")


@dataclass(frozen=True)
class SceneEdit:
    """One edit of a reference scene."""

    kind: EditKind
    instruction: str
    """The edit in words: "make the circle green", "add a small yellow heart in the top left"."""
    object_index: int | None = None
    """Index of the edited or removed object in the reference scene (None for ``add``)."""
    value: str | None = None
    """New colour (recolour), size (resize) or named position (move)."""
    added: SceneObject | None = None
    """The new object (add)."""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "instruction": self.instruction}
        if self.object_index is not None:
            data["object_index"] = self.object_index
        if self.value is not None:
            data["value"] = self.value
        if self.added is not None:
            data["added"] = self.added.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SceneEdit:
        added = data.get("added")
        return cls(
            kind=data["kind"],
            instruction=data["instruction"],
            object_index=data.get("object_index"),
            value=data.get("value"),
            added=SceneObject.from_dict(added) if added is not None else None,
        )


def referring_phrase(scene: Scene, index: int) -> str:
    """The shortest phrase naming object ``index`` unambiguously: "the star" or "the red star"."""
    obj = scene.objects[index]
    same_shape = sum(other.shape == obj.shape for other in scene.objects)
    return f"the {obj.shape}" if same_shape == 1 else f"the {obj.colour} {obj.shape}"


def _edited(reference: Scene, objects: list[SceneObject], new_id: str, edit: SceneEdit) -> Scene:
    return reference.with_objects(objects, id=new_id, edited_from=reference.id, edit=edit.to_dict())


def _try_edit(
    kind: EditKind,
    reference: Scene,
    rng: np.random.Generator,
    config: SceneGeneratorConfig,
    allowed_pairs: list[Pair],
    new_id: str,
) -> tuple[SceneEdit, Scene] | None:
    objects = reference.objects
    n = len(objects)
    if kind == "add":
        if n >= config.max_objects:
            return None
        obj = sample_object(rng, reference, config, pairs=allowed_pairs)
        if obj is None:
            return None
        text = f"add {with_article(obj.noun_phrase())} {POSITION_PHRASES[obj.position]}"
        edit = SceneEdit(kind="add", instruction=text, added=obj)
        return edit, _edited(reference, [*objects, obj], new_id, edit)

    i = int(rng.integers(n))
    ref = referring_phrase(reference, i)
    old = objects[i]
    if kind == "remove":
        if n <= config.min_objects:
            return None
        edit = SceneEdit(kind="remove", instruction=f"remove {ref}", object_index=i)
        return edit, _edited(reference, [o for k, o in enumerate(objects) if k != i], new_id, edit)

    if kind == "recolour":
        taken = {o.pair for k, o in enumerate(objects) if k != i}
        colours = [c for c in COLOURS if c != old.colour and (old.shape, c) not in taken]
        colours = [c for c in colours if (old.shape, c) in allowed_pairs]
        if not colours:
            return None
        colour = colours[int(rng.integers(len(colours)))]
        new = replace(old, colour=colour)
        edit = SceneEdit(kind="recolour", instruction=f"make {ref} {colour}", object_index=i, value=colour)
    elif kind == "resize":
        size = next(s for s in SIZES if s != old.size)
        new = replace(old, size=size)
        edit = SceneEdit(kind="resize", instruction=f"make {ref} {size}", object_index=i, value=size)
    else:  # move
        taken_cells = {o.position for o in objects}
        cells = [c for c in POSITIONS if c not in taken_cells]
        if not cells:
            return None
        cell = cells[int(rng.integers(len(cells)))]
        moved = sample_object(rng, reference, config, pairs=[old.pair], size=old.size, position=cell, ignore=i)
        if moved is None:
            return None
        new = moved
        edit = SceneEdit(kind="move", instruction=f"move {ref} to the {cell}", object_index=i, value=cell)
    edited_objects = [new if k == i else o for k, o in enumerate(objects)]
    return edit, _edited(reference, edited_objects, new_id, edit)


def sample_edit(
    reference: Scene,
    rng: np.random.Generator,
    config: SceneGeneratorConfig,
    *,
    new_id: str,
    forbid_pairs: Collection[Pair] = (),
    require_pairs: Collection[Pair] = (),
    kinds: Collection[EditKind] = EDIT_KINDS,
    attempts: int = 50,
) -> tuple[SceneEdit, Scene] | None:
    """A random single edit of ``reference`` and the edited scene (id ``new_id``), or None.

    The edited scene keeps every invariant (:func:`~.graph.scene_problems`), contains no pair of
    ``forbid_pairs`` and, if ``require_pairs`` is given, still holds one of them. Its metadata
    records ``edited_from`` (the reference id) and the ``edit``.
    """
    forbidden = set(forbid_pairs)
    allowed_pairs = [pair for pair in ALL_PAIRS if pair not in forbidden]
    kinds = [k for k in EDIT_KINDS if k in set(kinds)]
    if not kinds:
        raise ValueError("kinds: no edit kind given")
    for _ in range(attempts):
        kind = kinds[int(rng.integers(len(kinds)))]
        found = _try_edit(kind, reference, rng, config, allowed_pairs, new_id)
        if found is None:
            continue
        edit, edited = found
        if scene_problems(edited) or not satisfies_constraints(edited, forbidden, require_pairs):
            continue
        return edit, edited
    return None


_REWORDINGS: dict[EditKind, tuple[str, ...]] = {
    "recolour": ("turn {ref} {value}", "change {ref} to {value}", "{ref} should be {value}", "colour {ref} {value}"),
    "resize": ("{ref} should be {value}", "change {ref} to {value}", "resize {ref} to {value}"),
    "move": ("put {ref} {where}", "{ref} should be {where}", "shift {ref} to the {value}"),
    "remove": ("take away {ref}", "delete {ref}", "get rid of {ref}", "without {ref}"),
    "add": ("put {thing} {where}", "also show {thing} {where}", "include {thing} {where}"),
}


def reworded_instruction(edit: SceneEdit, reference: Scene, rng: np.random.Generator) -> str:
    """Another wording of ``edit``'s instruction ("turn the circle blue", "take away the star"), for
    training a model that applies edits to more than the benchmark's one template. Training only:
    the benchmark's own composed queries keep :attr:`SceneEdit.instruction`."""
    pattern = _REWORDINGS[edit.kind][int(rng.integers(len(_REWORDINGS[edit.kind])))]
    ref = referring_phrase(reference, edit.object_index) if edit.object_index is not None else ""
    thing = with_article(edit.added.noun_phrase()) if edit.added is not None else ""
    position = edit.added.position if edit.added is not None else edit.value
    where = POSITION_PHRASES.get(position, "") if position else ""
    return pattern.format(ref=ref, value=edit.value or "", where=where, thing=thing)
