"""Caption quality on the scene benchmark: parse a caption back into objects, score it against the graph.

A caption of a scene (:mod:`..scenes.captions`, training or test templates, or a captioner's output)
names objects as "a <size> <colour> <shape>" and places each one either by its grid position
("in the top left", before or after the noun phrase) or by a relation to the next object named
("a red circle to the left of a blue square"). :func:`parse_caption` reads those back;
:func:`caption_f1` scores captions against their scenes:

* an object **matches** a scene object when shape, colour and size agree and it is placed right:
  its stated grid position equals the object's, or the relation it takes part in holds in the scene
  between the objects named (an object with neither is not placed, so never matches);
* object-level precision, recall and F1 are micro-averaged over all captions (each scene object
  matched at most once, so a repeated object counts as a false positive);
* per-attribute accuracy aligns each caption's objects one-to-one with the scene's (the alignment
  agreeing on most attributes) and counts, over aligned pairs, how often shape, colour, size and
  placement ("position") agree;
* ``exact``: captions whose objects all match with none missing; ``count_accuracy``: captions
  naming as many objects as the scene has; ``background_accuracy``: over captions naming one.

The ground-truth captions parse to F1 1.0 (a ceiling the tests check, for both template sets).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..scenes.captions import NUMBER_WORDS, RELATION_PHRASES
from ..scenes.graph import BACKGROUNDS, COLOURS, POSITION_PHRASES, SHAPES, SIZES, Scene, SceneObject


@dataclass(frozen=True)
class ParsedObject:
    """An object a caption names; attributes it does not state are None."""

    shape: str
    colour: str | None = None
    size: str | None = None
    position: str | None = None


@dataclass
class ParsedCaption:
    objects: list[ParsedObject] = field(default_factory=list)
    relations: list[tuple[int, str, int]] = field(default_factory=list)
    """``(i, relation, j)`` between indices of :attr:`objects` (relation as in :data:`~..scenes.graph.RELATIONS`)."""
    background: str | None = None
    count: int | None = None
    """The number of objects the caption states ("three objects: ..."), if any."""


def _alternation(words: Sequence[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_PHRASE_TO_POSITION = {phrase: position for position, phrase in POSITION_PHRASES.items()}
_PHRASE_TO_RELATION = {phrase: relation for relation, phrase in RELATION_PHRASES.items()}
_SHAPE_FORMS = {shape: shape for shape in SHAPES} | {
    ("crosses" if shape == "cross" else shape + "s"): shape for shape in SHAPES
}
_OBJECT_RE = re.compile(
    rf"\b(?:a|an|one)\s+(?:(?P<size>{_alternation(SIZES)})\s+)?(?:(?P<colour>{_alternation(list(COLOURS))})\s+)?"
    rf"(?P<shape>{_alternation(list(_SHAPE_FORMS))})\b"
)
_POSITION = _alternation(list(_PHRASE_TO_POSITION))
_POSITION_AFTER = re.compile(rf"^\s*(?:sits\s+)?(?P<pos>{_POSITION})\b")
_POSITION_BEFORE = re.compile(rf"(?:^|[;,:.]|\band)\s*(?P<pos>{_POSITION})\s*,\s*$")
_RELATION_GAP = re.compile(rf"^\s*(?:sits\s+)?(?P<rel>{_alternation(list(_PHRASE_TO_RELATION))})\s*$")
_BACKGROUND_RE = re.compile(rf"\bon an? (?P<bg>{_alternation(list(BACKGROUNDS))}) (?:background|backdrop)\b")
_COUNT_RE = re.compile(rf"\b(?P<n>{_alternation(NUMBER_WORDS[1:])}|\d+) (?:objects?|shapes?|things?)\b")


def parse_caption(text: str) -> ParsedCaption:
    """The objects, relations, background and stated count of a caption (see the module docstring)."""
    text = re.sub(r"\s+", " ", text.lower()).strip()
    text = re.sub(r"\b(?:center|middle)\b", "centre", re.sub(r"\bcolor\b", "colour", text))
    matches = list(_OBJECT_RE.finditer(text))
    objects: list[ParsedObject] = []
    relations: list[tuple[int, str, int]] = []
    for k, m in enumerate(matches):
        before = text[matches[k - 1].end() if k else 0 : m.start()]
        after = text[m.end() : matches[k + 1].start() if k + 1 < len(matches) else len(text)]
        position = None
        found = _POSITION_AFTER.match(after) or _POSITION_BEFORE.search(before)
        if found:
            position = _PHRASE_TO_POSITION[found["pos"]]
        elif k + 1 < len(matches) and (rel := _RELATION_GAP.match(after)):
            relations.append((k, _PHRASE_TO_RELATION[rel["rel"]], k + 1))
        objects.append(ParsedObject(_SHAPE_FORMS[m["shape"]], m["colour"], m["size"], position))
    background = _BACKGROUND_RE.search(text)
    count = _COUNT_RE.search(text)
    n = None
    if count:
        n = int(count["n"]) if count["n"].isdigit() else NUMBER_WORDS.index(count["n"])
    return ParsedCaption(objects, relations, background["bg"] if background else None, n)


# ---------------------------------------------------------------------------------------- scoring
def _placed_right(parsed: ParsedCaption, i: int, truth: SceneObject, scene: Scene) -> bool:
    """Whether parsed object ``i`` (standing for ``truth``) is placed, and placed right."""
    obj = parsed.objects[i]
    involved = [(a, r, b) for a, r, b in parsed.relations if i in (a, b)]
    if obj.position is None and not involved:
        return False
    if obj.position is not None and obj.position != truth.position:
        return False
    if not involved:
        return True
    index = {o.pair: n for n, o in enumerate(scene.objects)}
    facts = set(scene.relations())
    for a, relation, b in involved:
        pa, pb = parsed.objects[a], parsed.objects[b]
        ia, ib = index.get((pa.shape, pa.colour)), index.get((pb.shape, pb.colour))
        if ia is None or ib is None or (ia, relation, ib) not in facts:
            return False
    return True


def _agreement(obj: ParsedObject, truth: SceneObject) -> tuple[bool, bool, bool, bool]:
    return (
        obj.shape == truth.shape,
        obj.colour == truth.colour,
        obj.size == truth.size,
        obj.position == truth.position,
    )


def _align(parsed: ParsedCaption, scene: Scene) -> list[tuple[int, int]]:
    """One-to-one (parsed index, scene index) pairs agreeing on most attributes in total."""
    preds, truths = parsed.objects, scene.objects
    score = [[sum(_agreement(p, t)) for t in truths] for p in preds]
    n = min(len(preds), len(truths))
    if n == 0:
        return []
    if len(preds) <= 8:  # exhaustive: scenes hold at most a handful of objects
        best: tuple[int, list[tuple[int, int]]] = (-1, [])
        if len(preds) >= len(truths):
            for chosen in itertools.permutations(range(len(preds)), len(truths)):
                pairs = list(zip(chosen, range(len(truths)), strict=True))
                total = sum(score[p][t] for p, t in pairs)
                best = max(best, (total, pairs), key=lambda x: x[0])
        else:
            for chosen in itertools.permutations(range(len(truths)), len(preds)):
                pairs = list(zip(range(len(preds)), chosen, strict=True))
                total = sum(score[p][t] for p, t in pairs)
                best = max(best, (total, pairs), key=lambda x: x[0])
        return sorted(best[1])
    ranked = sorted((-score[p][t], p, t) for p in range(len(preds)) for t in range(len(truths)))
    used_p: set[int] = set()
    used_t: set[int] = set()
    pairs = []
    for _, p, t in ranked:
        if p not in used_p and t not in used_t:
            pairs.append((p, t))
            used_p.add(p)
            used_t.add(t)
    return sorted(pairs)


@dataclass
class CaptionScore:
    """One caption against its scene."""

    n_pred: int
    n_true: int
    true_positives: int
    aligned: int
    agree: dict[str, int]
    """Aligned pairs agreeing on shape, colour, size, position (placement)."""
    background_stated: bool
    background_right: bool


def score_caption(caption: str | ParsedCaption, scene: Scene) -> CaptionScore:
    parsed = parse_caption(caption) if isinstance(caption, str) else caption
    by_pair = {obj.pair: n for n, obj in enumerate(scene.objects)}
    matched: set[int] = set()
    for i, obj in enumerate(parsed.objects):
        t = by_pair.get((obj.shape, obj.colour))
        if t is None or t in matched:
            continue
        truth = scene.objects[t]
        if obj.size == truth.size and _placed_right(parsed, i, truth, scene):
            matched.add(t)
    agree = dict.fromkeys(("shape", "colour", "size", "position"), 0)
    pairs = _align(parsed, scene)
    for p, t in pairs:
        shape, colour, size, _ = _agreement(parsed.objects[p], scene.objects[t])
        placed = _placed_right(parsed, p, scene.objects[t], scene)
        for name, ok in zip(agree, (shape, colour, size, placed), strict=True):
            agree[name] += int(ok)
    return CaptionScore(
        n_pred=len(parsed.objects),
        n_true=len(scene.objects),
        true_positives=len(matched),
        aligned=len(pairs),
        agree=agree,
        background_stated=parsed.background is not None,
        background_right=parsed.background == scene.background,
    )


def caption_f1(captions: Sequence[str], scenes: Sequence[Scene]) -> dict[str, Any]:
    """Object-level precision / recall / F1 and per-attribute accuracy of ``captions`` (one per scene)."""
    if len(captions) != len(scenes):
        raise ValueError(f"give one caption per scene: {len(captions)} captions, {len(scenes)} scenes")
    scores = [score_caption(c, s) for c, s in zip(captions, scenes, strict=True)]
    tp = sum(s.true_positives for s in scores)
    n_pred = sum(s.n_pred for s in scores)
    n_true = sum(s.n_true for s in scores)
    aligned = sum(s.aligned for s in scores)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(scores)
    stated = [s for s in scores if s.background_stated]
    out: dict[str, Any] = {
        "n_captions": n,
        "n_objects_pred": n_pred,
        "n_objects_true": n_true,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "exact": sum(s.true_positives == s.n_true == s.n_pred for s in scores) / n if n else 0.0,
        "count_accuracy": sum(s.n_pred == s.n_true for s in scores) / n if n else 0.0,
        "empty": sum(s.n_pred == 0 for s in scores) / n if n else 0.0,
    }
    for name in ("shape", "colour", "size", "position"):
        out[f"{name}_accuracy"] = sum(s.agree[name] for s in scores) / aligned if aligned else 0.0
    out["background_accuracy"] = sum(s.background_right for s in stated) / len(stated) if stated else None
    return out


__all__ = ["CaptionScore", "ParsedCaption", "ParsedObject", "caption_f1", "parse_caption", "score_caption"]


def caption_scene_report(
    images: Sequence[Any],
    scenes: Sequence[Scene],
    ground_truth: Sequence[str],
    captioner: Any,
    *,
    batch_size: int = 128,
    progress: bool | None = None,
) -> dict[str, Any]:
    """A captioner's object-level F1 on a split's images (greedy decoding), beside the F1 of the split's
    own ground-truth captions parsed the same way (the parser's ceiling), and its captioning speed."""
    import time

    import torch

    from ..progress import progress_bar

    captions: list[str] = []
    start = time.perf_counter()
    with progress_bar(f"captioning ({captioner.name})", len(images), "img", progress) as bar:
        for lo in range(0, len(images), batch_size):
            chunk = images[lo : lo + batch_size]
            captions += captioner.caption(torch.stack([captioner.image_transform(im) for im in chunk]))
            bar.advance(len(chunk))
    seconds = time.perf_counter() - start
    return {
        "captioner": captioner.name,
        "captioner_fingerprint": captioner.fingerprint,
        "decoding": "greedy",
        "generated": caption_f1(captions, scenes),
        "ground_truth_parse": caption_f1(list(ground_truth), scenes),
        "images_per_second": len(images) / seconds if seconds > 0 else 0.0,
        "examples": [{"caption": c, "truth": g} for c, g in zip(captions[:5], ground_truth[:5], strict=False)],
    }


def word_f1(captions: list[str], references: list[list[str]]) -> float:
    """Mean over ``captions`` of the best bag-of-words F1 against that image's ``references``: a
    caption figure for collections without scene graphs (lower-cased words, counted with repeats)."""
    from collections import Counter

    from ...adapters.qformer_captioner import split_words

    def f1(a: Counter[str], b: Counter[str]) -> float:
        common = sum((a & b).values())
        return 0.0 if not common else 2 * common / (sum(a.values()) + sum(b.values()))

    scores = []
    for caption, refs in zip(captions, references, strict=True):
        words = Counter(split_words(caption))
        scores.append(max((f1(words, Counter(split_words(r))) for r in refs), default=0.0))
    return float(sum(scores) / len(scores)) if scores else 0.0
