"""Captions written from a scene graph, in several paraphrase templates.

Two disjoint template sets: ``train`` (for training and validation captions) and ``test`` (only
for test and compositional captions and full-description queries), so a model is evaluated on
wordings it never saw. Every caption names every object's size, colour and shape, and places
each object by its grid position or by a relation to another object. The order in which objects
are listed depends on the template (reading order, size, a relation, or random).

Each test-only template carries a phrase that no training template uses (see
:data:`TEST_TEMPLATE_MARKERS`); the tests check that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .graph import POSITION_PHRASES, POSITIONS, Scene, SceneObject, with_article

TemplateSet = Literal["train", "test"]

NUMBER_WORDS: tuple[str, ...] = ("no", "one", "two", "three", "four", "five", "six")

RELATION_PHRASES: dict[str, str] = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}

TEST_TEMPLATE_MARKERS: tuple[str, ...] = ("we see", "backdrop", "this scene contains", " sits ")
"""Phrases only test-only templates use."""


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def object_phrase(obj: SceneObject, *, position: bool = True) -> str:
    """``"a small red circle in the top left"`` (position optional)."""
    text = with_article(obj.noun_phrase())
    return f"{text} {POSITION_PHRASES[obj.position]}" if position else text


def join_phrases(phrases: list[str]) -> str:
    """``"a, b and c"``."""
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


# Object orders -----------------------------------------------------------------------------


def reading_order(scene: Scene) -> list[SceneObject]:
    """Top row first, left to right."""
    return sorted(scene.objects, key=lambda obj: (POSITIONS.index(obj.position), obj.x))


def size_order(scene: Scene) -> list[SceneObject]:
    """Large objects first, then reading order."""
    return sorted(reading_order(scene), key=lambda obj: obj.size != "large")


def random_order(scene: Scene, rng: np.random.Generator) -> list[SceneObject]:
    return [scene.objects[i] for i in rng.permutation(len(scene.objects))]


def _listed(objects: list[SceneObject]) -> str:
    return join_phrases([object_phrase(obj) for obj in objects])


def _relation_clause(scene: Scene, rng: np.random.Generator, verb: str) -> tuple[str, list[SceneObject]] | None:
    """``"a red circle {verb}to the left of a blue square"`` and the objects it leaves unplaced."""
    relations = scene.relations()
    if not relations:
        return None
    i, relation, j = relations[int(rng.integers(len(relations)))]
    a, b = scene.objects[i], scene.objects[j]
    clause = f"{object_phrase(a, position=False)} {verb}{RELATION_PHRASES[relation]} " + (
        object_phrase(b, position=False)
    )
    rest = [obj for obj in reading_order(scene) if obj is not a and obj is not b]
    return clause, rest


# Training templates ------------------------------------------------------------------------


def _t_listing(scene: Scene, rng: np.random.Generator) -> str:
    return _listed(reading_order(scene))


def _t_background(scene: Scene, rng: np.random.Generator) -> str:
    return f"on a {scene.background} background: {_listed(random_order(scene, rng))}"


def _t_there_is(scene: Scene, rng: np.random.Generator) -> str:
    found = _relation_clause(scene, rng, verb="")
    if found is None:
        return f"there is {_listed(random_order(scene, rng))}"
    clause, rest = found
    return f"there is {clause}" + (f", and {_listed(rest)}" if rest else "")


def _t_picture(scene: Scene, rng: np.random.Generator) -> str:
    return f"a picture showing {_listed(size_order(scene))}"


def _t_count(scene: Scene, rng: np.random.Generator) -> str:
    n = len(scene.objects)
    noun = "object" if n == 1 else "objects"
    return f"{number_word(n)} {noun}: {_listed(random_order(scene, rng))}"


def _t_position_first(scene: Scene, rng: np.random.Generator) -> str:
    parts = [f"{POSITION_PHRASES[obj.position]}, {object_phrase(obj, position=False)}" for obj in reading_order(scene)]
    return "; ".join(parts)


# Test-only templates -----------------------------------------------------------------------


def _u_we_see(scene: Scene, rng: np.random.Generator) -> str:
    objects = list(reversed(reading_order(scene)))
    return f"we see {_listed(objects)} on a {scene.background} backdrop"


def _u_contains(scene: Scene, rng: np.random.Generator) -> str:
    n = len(scene.objects)
    noun = "shape" if n == 1 else "shapes"
    return f"this scene contains {number_word(n)} {noun}: {_listed(random_order(scene, rng))}"


def _u_sits(scene: Scene, rng: np.random.Generator) -> str:
    found = _relation_clause(scene, rng, verb="sits ")
    if found is None:
        first, *rest = random_order(scene, rng)
        clause = f"{object_phrase(first, position=False)} sits {POSITION_PHRASES[first.position]}"
    else:
        clause, rest = found
    return clause + (f"; also {_listed(rest)}" if rest else "")


@dataclass(frozen=True)
class CaptionTemplate:
    name: str
    template_set: TemplateSet
    write: Callable[[Scene, np.random.Generator], str]


TEMPLATES: tuple[CaptionTemplate, ...] = (
    CaptionTemplate("listing", "train", _t_listing),
    CaptionTemplate("background", "train", _t_background),
    CaptionTemplate("there_is", "train", _t_there_is),
    CaptionTemplate("picture", "train", _t_picture),
    CaptionTemplate("count", "train", _t_count),
    CaptionTemplate("position_first", "train", _t_position_first),
    CaptionTemplate("we_see", "test", _u_we_see),
    CaptionTemplate("contains", "test", _u_contains),
    CaptionTemplate("sits", "test", _u_sits),
)


def templates(template_set: TemplateSet) -> tuple[CaptionTemplate, ...]:
    if template_set not in ("train", "test"):
        raise ValueError(f"template_set: {template_set!r} is not 'train' or 'test'")
    return tuple(t for t in TEMPLATES if t.template_set == template_set)


def caption_scene(scene: Scene, rng: np.random.Generator, template_set: TemplateSet = "train") -> str:
    """One caption of ``scene`` from a random template of ``template_set``."""
    pool = templates(template_set)
    return pool[int(rng.integers(len(pool)))].write(scene, rng)


def all_captions(scene: Scene, template_set: TemplateSet, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` captions of ``scene``, each from a different template while templates last."""
    if n < 0:
        raise ValueError(f"n: {n} must be >= 0")
    pool = templates(template_set)
    chosen: list[CaptionTemplate] = []
    while len(chosen) < n:
        chosen.extend(pool[i] for i in rng.permutation(len(pool)))
    return [template.write(scene, rng) for template in chosen[:n]]
