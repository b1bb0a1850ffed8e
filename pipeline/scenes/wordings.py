"""Free-form wordings of a scene: how people type a search, not how the caption templates read.

Each *style* writes a request for a scene the way a person might: chatty with an opener, with
words the benchmark's templates never use, in another order, clipped to keywords, with typos, or
with details left out. They feed the query-normalisation evaluation and the rewriter's training
data; :data:`HELD_OUT_STYLE` is never used for training, so the evaluation on it measures how a
normaliser does on a way of writing it never saw.

``paraphrase`` (training only) uses its own vocabulary, which shares no word with the held-out
``synonyms`` beyond the benchmark's plain words: a normaliser learns that unfamiliar words name
the plain ones without seeing the held-out words.

Every style keeps every object's shape and colour (``missing`` drops sizes and positions only), so
a request still points at its scene, mostly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .generator import SceneConfigError
from .graph import Scene, SceneObject

SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("tiny", "little", "smallish"), "large": ("big", "huge", "giant")}
POSITION_WORDS: dict[str, tuple[str, ...]] = {
    "top left": ("upper left corner", "top-left corner", "upper left"),
    "top": ("top middle", "up top", "upper middle"),
    "top right": ("upper right corner", "top-right corner", "upper right"),
    "left": ("left side", "middle left", "left edge"),
    "centre": ("middle", "center", "dead centre"),
    "right": ("right side", "middle right", "right edge"),
    "bottom left": ("lower left corner", "bottom-left corner", "lower left"),
    "bottom": ("bottom middle", "down low", "lower middle"),
    "bottom right": ("lower right corner", "bottom-right corner", "lower right"),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("round dot", "disc"),
    "square": ("box", "block"),
    "triangle": ("triangle shape", "pyramid shape"),
    "star": ("star shape", "five-pointed star"),
    "heart": ("heart shape", "love heart"),
    "cross": ("plus sign", "x shape"),
    "diamond": ("rhombus", "diamond shape"),
    "hexagon": ("six-sided shape", "hex"),
}
# The train-only paraphrase vocabulary: no word here is one of the held-out synonyms above (or one
# of their words, beyond the plain names the benchmark itself uses), so a normaliser trained on
# ``paraphrase`` learns that unknown words map to the plain ones without ever seeing the held-out words.
PARAPHRASE_SIZES: dict[str, tuple[str, ...]] = {
    "small": ("mini", "petite", "wee", "compact"),
    "large": ("massive", "enormous", "jumbo", "oversized"),
}
PARAPHRASE_POSITIONS: dict[str, tuple[str, ...]] = {
    "top left": ("northwest", "at the top on the left"),
    "top": ("near the top", "along the top"),
    "top right": ("northeast", "at the top on the right"),
    "left": ("on the left-hand part", "westward"),
    "centre": ("central spot", "centrally"),
    "right": ("on the right-hand part", "eastward"),
    "bottom left": ("southwest", "at the bottom on the left"),
    "bottom": ("near the bottom", "along the bottom"),
    "bottom right": ("southeast", "at the bottom on the right"),
}
PARAPHRASE_SHAPES: dict[str, tuple[str, ...]] = {
    "circle": ("ball", "orb", "sphere"),
    "square": ("quad", "quadrangle", "cube"),
    "triangle": ("wedge", "trigon"),
    "star": ("starburst", "star symbol"),
    "heart": ("valentine", "heart symbol"),
    "cross": ("saltire", "cross symbol"),
    "diamond": ("lozenge", "diamond symbol"),
    "hexagon": ("hexagonal tile", "six-cornered tile"),
}

OPENERS: tuple[str, ...] = (
    "hey, can you find",
    "i'm looking for",
    "show me",
    "got any pictures with",
    "need the image with",
    "search for",
    "pls find",
)
CLOSERS: tuple[str, ...] = ("", " please", " thanks", "?", " pls", " if you have it")


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _objects(scene: Scene, rng: np.random.Generator) -> list[SceneObject]:
    return [scene.objects[i] for i in rng.permutation(len(scene.objects))]


def _plain(obj: SceneObject, *, size: bool = True, position: bool = True) -> str:
    words = [obj.size] if size else []
    text = " ".join([*words, obj.colour, obj.shape])
    return f"{text} in the {obj.position}" if position else text


def _colloquial(scene: Scene, rng: np.random.Generator) -> str:
    parts = [_plain(obj) for obj in _objects(scene, rng)]
    return f"{_pick(rng, OPENERS)} a " + " and a ".join(parts) + _pick(rng, CLOSERS)


def _synonyms(scene: Scene, rng: np.random.Generator) -> str:
    parts = []
    for obj in _objects(scene, rng):
        noun = _pick(rng, SHAPE_WORDS[obj.shape])
        parts.append(
            f"a {_pick(rng, SIZE_WORDS[obj.size])} {obj.colour} {noun}, {_pick(rng, POSITION_WORDS[obj.position])}"
        )
    return "; ".join(parts)


def _paraphrase(scene: Scene, rng: np.random.Generator) -> str:
    parts = []
    for obj in _objects(scene, rng):
        size = _pick(rng, PARAPHRASE_SIZES[obj.size]) if rng.random() < 0.7 else obj.size
        shape = _pick(rng, PARAPHRASE_SHAPES[obj.shape]) if rng.random() < 0.7 else obj.shape
        where = _pick(rng, PARAPHRASE_POSITIONS[obj.position]) if rng.random() < 0.7 else f"in the {obj.position}"
        parts.append(f"a {size} {obj.colour} {shape} {where}")
    return " with ".join(parts) if rng.random() < 0.5 else " plus ".join(parts)


def _reordered(scene: Scene, rng: np.random.Generator) -> str:
    parts = [f"{obj.shape}, {obj.colour} and {obj.size}, at {obj.position}" for obj in _objects(scene, rng)]
    return "picture: " + " / ".join(parts)


def _terse(scene: Scene, rng: np.random.Generator) -> str:
    return ", ".join(f"{obj.colour} {obj.shape} {obj.size} {obj.position}" for obj in _objects(scene, rng))


def _typo(word: str, rng: np.random.Generator) -> str:
    if len(word) < 4:
        return word
    i = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(3))
    if kind == 0:  # swap two letters
        return word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]
    if kind == 1:  # drop one
        return word[:i] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]  # double one


def _typos(scene: Scene, rng: np.random.Generator) -> str:
    words = " and ".join(f"a {_plain(obj)}" for obj in _objects(scene, rng)).split()
    return " ".join(_typo(w, rng) if rng.random() < 0.3 else w for w in words)


def _missing(scene: Scene, rng: np.random.Generator) -> str:
    parts = [_plain(obj, size=rng.random() < 0.3, position=rng.random() < 0.5) for obj in _objects(scene, rng)]
    return "the one with a " + " and a ".join(parts)


STYLES: dict[str, Callable[[Scene, np.random.Generator], str]] = {
    "colloquial": _colloquial,
    "synonyms": _synonyms,
    "paraphrase": _paraphrase,
    "reordered": _reordered,
    "terse": _terse,
    "typos": _typos,
    "missing": _missing,
}
"""Wording styles by name."""

HELD_OUT_STYLE = "synonyms"
"""Never used to train a normaliser: the evaluation's unseen way of writing."""

TRAIN_STYLES: tuple[str, ...] = tuple(s for s in STYLES if s != HELD_OUT_STYLE)


def free_form(scene: Scene, style: str, rng: np.random.Generator) -> str:
    """A request for ``scene`` written in ``style`` (one of :data:`STYLES`)."""
    if style not in STYLES:
        raise SceneConfigError(f"style {style!r}: known styles are {sorted(STYLES)}")
    return STYLES[style](scene, rng)


__all__ = ["HELD_OUT_STYLE", "PARAPHRASE_SHAPES", "STYLES", "TRAIN_STYLES", "free_form"]
