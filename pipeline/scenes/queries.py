"""Query sets with ground truth, drawn from scene graphs.

Five query types, each a dataclass with a ``type`` field in its JSON form:

* ``full`` — a test-template caption of one scene; the target is that scene.
* ``partial`` — one object or one attribute ("a star", "something red", "a green heart"); many
  scenes match, all listed in ``relevant_ids``; ``target_id`` is the scene it was drawn from.
* ``binding_swap`` — an image, a true text and a false text with two objects' colours (or sizes)
  swapped, made only where the swapped text is false of the image.
* ``relation_swap`` — an image, a true relation and the same relation with its arguments swapped.
* ``composed`` — a reference scene, an edit instruction, and the edited scene as target (the
  edited scenes are added to the split's collection).

Queries are written as JSON lines (:func:`write_queries`, :func:`read_queries`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .captions import RELATION_PHRASES, caption_scene
from .edits import sample_edit
from .generator import Pair, SceneGeneratorConfig
from .graph import POSITION_PHRASES, Scene, SceneObject, with_article

logger = logging.getLogger(__name__)

ATTRIBUTE_TYPES: tuple[str, ...] = ("colour", "shape", "size", "position")
"""Attribute types a partial query can constrain."""

PARTIAL_KINDS: tuple[tuple[str, ...], ...] = (
    ("shape",),
    ("colour",),
    ("size",),
    ("position",),
    ("colour", "shape"),
    ("size", "shape"),
    ("shape", "position"),
    ("colour", "position"),
    ("size", "colour"),
)
"""Which attributes of one object a partial query names, drawn uniformly."""


@dataclass
class FullQuery:
    id: str
    text: str
    target_id: str
    type: ClassVar[str] = "full"


@dataclass
class PartialQuery:
    id: str
    text: str
    attributes: dict[str, str]
    """What the query constrains, e.g. ``{"colour": "red", "shape": "star"}``: a scene matches
    when one of its objects has all of these."""
    target_id: str
    """The scene the query was drawn from."""
    relevant_ids: list[str] = field(default_factory=list)
    """Every scene of the collection that matches, sorted."""
    type: ClassVar[str] = "partial"


@dataclass
class BindingSwapQuery:
    id: str
    image_id: str
    positive: str
    """True of the image: "a red circle and a blue square"."""
    negative: str
    """The same objects with an attribute swapped, false of the image: "a blue circle and a red
    square"."""
    swapped: str
    """Which attribute was swapped: ``colour`` or ``size``."""
    type: ClassVar[str] = "binding_swap"


@dataclass
class RelationSwapQuery:
    id: str
    image_id: str
    positive: str
    """True of the image: "a red circle to the left of a blue square"."""
    negative: str
    """Arguments swapped, false of the image: "a blue square to the left of a red circle"."""
    relation: str
    type: ClassVar[str] = "relation_swap"


@dataclass
class ComposedQuery:
    id: str
    reference_id: str
    instruction: str
    target_id: str
    """The edited scene (present in the collection, metadata ``edited_from``)."""
    target_text: str
    """A test-template caption of the edited scene."""
    edit: dict[str, Any] = field(default_factory=dict)
    """The edit as data (:meth:`SceneEdit.to_dict`)."""
    type: ClassVar[str] = "composed"


Query = FullQuery | PartialQuery | BindingSwapQuery | RelationSwapQuery | ComposedQuery
QUERY_TYPES: dict[str, type] = {
    cls.type: cls for cls in (FullQuery, PartialQuery, BindingSwapQuery, RelationSwapQuery, ComposedQuery)
}


def query_to_dict(query: Query) -> dict[str, Any]:
    return {"type": query.type, **asdict(query)}


def query_from_dict(data: Mapping[str, Any]) -> Query:
    data = dict(data)
    kind = data.pop("type", None)
    if kind not in QUERY_TYPES:
        raise ValueError(f"type: {kind!r} is not one of {sorted(QUERY_TYPES)}")
    return QUERY_TYPES[kind](**data)


def write_queries(path: Path, queries: Iterable[Query]) -> int:
    """Write queries as JSON lines; returns how many."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as f:
        for query in queries:
            f.write(json.dumps(query_to_dict(query)) + "\n")
            count += 1
    return count


def read_queries(path: Path) -> list[Query]:
    with Path(path).open(encoding="utf-8") as f:
        return [query_from_dict(json.loads(line)) for line in f if line.strip()]


# Matching and chance -------------------------------------------------------------------------


def object_matches(obj: SceneObject, attributes: Mapping[str, str]) -> bool:
    """Whether one object has every attribute value in ``attributes``."""
    for name, value in attributes.items():
        if name not in ATTRIBUTE_TYPES:
            raise ValueError(f"attributes: {name!r} is not one of {ATTRIBUTE_TYPES}")
        if getattr(obj, name) != value:
            return False
    return True


def scene_matches(scene: Scene, attributes: Mapping[str, str]) -> bool:
    """Whether some object of ``scene`` has all of ``attributes``."""
    return any(object_matches(obj, attributes) for obj in scene.objects)


def matching_ids(scenes: Iterable[Scene], attributes: Mapping[str, str]) -> list[str]:
    """Sorted ids of the scenes that match ``attributes``."""
    return sorted(scene.id for scene in scenes if scene_matches(scene, attributes))


def chance_rate(scenes: Collection[Scene], attributes: Mapping[str, str]) -> float:
    """Fraction of ``scenes`` that match: the expected share of matches in a random ranking."""
    if not scenes:
        return 0.0
    return sum(scene_matches(scene, attributes) for scene in scenes) / len(scenes)


def partial_text(attributes: Mapping[str, str]) -> str:
    """Words for a partial query: "a star", "something red", "a large object", "an object in the
    top left", "a green heart", "a large red object"."""
    size, colour = attributes.get("size"), attributes.get("colour")
    shape, position = attributes.get("shape"), attributes.get("position")
    if shape is None and size is None and colour is not None:
        text = f"something {colour}"
    else:
        words = [w for w in (size, colour) if w is not None] + [shape or "object"]
        text = with_article(" ".join(words))
    return f"{text} {POSITION_PHRASES[position]}" if position is not None else text


# Query makers --------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _draw_scenes(scenes: Sequence[Scene], n: int | None, rng: np.random.Generator) -> list[Scene]:
    """All scenes (``n`` None) or ``n`` of them, in random order, repeating if ``n`` is larger."""
    if n is None:
        return list(scenes)
    order: list[int] = []
    while len(order) < n and scenes:
        order.extend(int(i) for i in rng.permutation(len(scenes)))
    return [scenes[i] for i in order[:n]]


def _shuffled(scenes: Sequence[Scene], rng: np.random.Generator) -> list[Scene]:
    return [scenes[int(i)] for i in rng.permutation(len(scenes))]


def make_full_queries(
    scenes: Sequence[Scene], rng: np.random.Generator, *, n: int | None = None, prefix: str = "q"
) -> list[FullQuery]:
    """One full-description query (a test-template caption) per drawn scene."""
    return [
        FullQuery(id=f"{prefix}-full-{k:05d}", text=caption_scene(scene, rng, "test"), target_id=scene.id)
        for k, scene in enumerate(_draw_scenes(scenes, n, rng))
    ]


def make_partial_queries(
    scenes: Sequence[Scene],
    collection: Collection[Scene],
    rng: np.random.Generator,
    *,
    n: int | None = None,
    prefix: str = "q",
) -> list[PartialQuery]:
    """Partial queries drawn from ``scenes``; ``relevant_ids`` computed over ``collection``."""
    queries = []
    collection = list(collection)
    relevant: dict[tuple[tuple[str, str], ...], list[str]] = {}  # few distinct attribute sets
    for k, scene in enumerate(_draw_scenes(scenes, n, rng)):
        obj = _pick(rng, scene.objects)
        kind = _pick(rng, PARTIAL_KINDS)
        attributes = {name: getattr(obj, name) for name in kind}
        key = tuple(sorted(attributes.items()))
        if key not in relevant:
            relevant[key] = matching_ids(collection, attributes)
        queries.append(
            PartialQuery(
                id=f"{prefix}-partial-{k:05d}",
                text=partial_text(attributes),
                attributes=attributes,
                target_id=scene.id,
                relevant_ids=list(relevant[key]),
            )
        )
    return queries


def _binding_swap(scene: Scene, rng: np.random.Generator) -> tuple[str, str, str] | None:
    """``(positive, negative, swapped)`` for a random pair of objects of ``scene``, or None."""
    present = {(obj.shape, obj.colour) for obj in scene.objects}
    options: list[tuple[int, int, str]] = []
    for i, a in enumerate(scene.objects):
        for j, b in enumerate(scene.objects):
            if i == j:
                continue
            # Colour swap: only when neither swapped object is in the scene, so the negative
            # describes a different scene in both of its halves.
            if (
                a.colour != b.colour
                and a.shape != b.shape
                and (a.shape, b.colour) not in present
                and (b.shape, a.colour) not in present
            ):
                options.append((i, j, "colour"))
            # Size swap: (shape, colour) names one object, so swapped sizes are always false.
            if a.size != b.size:
                options.append((i, j, "size"))
    if not options:
        return None
    i, j, swapped = _pick(rng, options)
    a, b = scene.objects[i], scene.objects[j]
    if swapped == "colour":
        positive = f"{with_article(f'{a.colour} {a.shape}')} and {with_article(f'{b.colour} {b.shape}')}"
        negative = f"{with_article(f'{b.colour} {a.shape}')} and {with_article(f'{a.colour} {b.shape}')}"
    else:
        positive = f"{with_article(a.noun_phrase())} and {with_article(b.noun_phrase())}"
        negative = (
            f"{with_article(f'{b.size} {a.colour} {a.shape}')} and {with_article(f'{a.size} {b.colour} {b.shape}')}"
        )
    return positive, negative, swapped


def make_binding_swap_queries(
    scenes: Sequence[Scene], rng: np.random.Generator, *, n: int | None = None, prefix: str = "q"
) -> list[BindingSwapQuery]:
    """Binding-swap pairs from the drawn scenes that allow one (two objects that differ)."""
    queries = []
    for scene in _shuffled(scenes, rng):
        if n is not None and len(queries) >= n:
            break
        found = _binding_swap(scene, rng)
        if found is None:
            continue
        positive, negative, swapped = found
        queries.append(
            BindingSwapQuery(
                id=f"{prefix}-binding-{len(queries):05d}",
                image_id=scene.id,
                positive=positive,
                negative=negative,
                swapped=swapped,
            )
        )
    return queries


def make_relation_swap_queries(
    scenes: Sequence[Scene], rng: np.random.Generator, *, n: int | None = None, prefix: str = "q"
) -> list[RelationSwapQuery]:
    """Relation-swap pairs from the drawn scenes that hold a relation."""
    queries = []
    for scene in _shuffled(scenes, rng):
        if n is not None and len(queries) >= n:
            break
        relations = scene.relations()
        if not relations:
            continue
        i, relation, j = _pick(rng, relations)
        a = with_article(scene.objects[i].noun_phrase(size=False))
        b = with_article(scene.objects[j].noun_phrase(size=False))
        phrase = RELATION_PHRASES[relation]
        queries.append(
            RelationSwapQuery(
                id=f"{prefix}-relation-{len(queries):05d}",
                image_id=scene.id,
                positive=f"{a} {phrase} {b}",
                negative=f"{b} {phrase} {a}",
                relation=relation,
            )
        )
    return queries


def make_composed_queries(
    scenes: Sequence[Scene],
    rng: np.random.Generator,
    config: SceneGeneratorConfig,
    *,
    n: int,
    forbid_pairs: Collection[Pair] = (),
    require_pairs: Collection[Pair] = (),
    prefix: str = "q",
    edited_prefix: str = "edit",
) -> tuple[list[ComposedQuery], list[Scene]]:
    """``n`` composed queries and the edited scenes they target (add those to the collection).

    Edited scenes get ids ``f"{edited_prefix}-{k:06d}"`` and keep the split's constraints.
    """
    queries: list[ComposedQuery] = []
    edited_scenes: list[Scene] = []
    if n <= 0 or not scenes:
        return queries, edited_scenes
    for reference in _draw_scenes(scenes, n * 3, rng):
        if len(queries) >= n:
            break
        k = len(queries)
        found = sample_edit(
            reference,
            rng,
            config,
            new_id=f"{edited_prefix}-{k:06d}",
            forbid_pairs=forbid_pairs,
            require_pairs=require_pairs,
        )
        if found is None:
            continue
        edit, edited = found
        edited_scenes.append(edited)
        queries.append(
            ComposedQuery(
                id=f"{prefix}-composed-{k:05d}",
                reference_id=reference.id,
                instruction=edit.instruction,
                target_id=edited.id,
                target_text=caption_scene(edited, rng, "test"),
                edit=edit.to_dict(),
            )
        )
    if len(queries) < n:
        logger.warning("made %d of %d composed queries (few editable scenes)", len(queries), n)
    return queries, edited_scenes
