"""A simulated user who knows the target scene graph: gives feedback and answers questions.

It stands in for a person in interactive retrieval runs (feedback rounds, ChatIR-style
dialogue), so that such runs can be scored without anyone at the keyboard. It is deterministic:
the same target, candidates and questions always give the same marks and answers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from .captions import join_phrases, number_word, object_phrase, size_order
from .graph import BACKGROUNDS, COLOURS, POSITION_PHRASES, POSITIONS, SHAPES, SIZES, Scene, SceneObject
from .queries import object_matches

logger = logging.getLogger(__name__)

UNKNOWN = "I don't know"
"""The answer to any question the user cannot parse."""

_FILLER = {"the", "a", "an", "any", "some", "object", "objects", "thing", "things", "shape", "shapes",
           "one", "ones", "corner", "side", "in", "at", "on", "something", "anything"}  # fmt: skip
_SHAPE_WORDS = {shape: shape for shape in SHAPES} | {
    ("crosses" if shape == "cross" else shape + "s"): shape for shape in SHAPES
}
_POSITION_RE = re.compile(r"\b(top left|top right|bottom left|bottom right|top|bottom|left|right|centre)\b")
_ASK_BACKGROUND = re.compile(r"^what (?:is the )?(?:background colour|colour (?:is |of )?the background)$")
_ASK_COUNT = re.compile(
    r"^how many (?P<desc>.+?)(?: are there| are in the (?:picture|image|scene)| can you see"
    r"| do you see)?$"
)
_ASK_ATTRIBUTE = (
    re.compile(r"^what (?P<attr>colour|shape|size) (?:is|are) (?P<desc>.+)$"),
    re.compile(r"^what is the (?P<attr>colour|shape|size) of (?P<desc>.+)$"),
)
_ASK_WHERE = re.compile(r"^where (?:is|are) (?P<desc>.+)$")
_ASK_EXISTS = re.compile(r"^(?:is|are) there (?P<desc>.+?)(?: in the (?:picture|image|scene))?$")
_BACKGROUND = re.compile(
    r"^(?:(?:some|any)thing )?(?:(?:on|with|in front of|against) )?(?:(?:a|an|the) )?(?P<colour>[a-z ]*?) ?"
    r"(?:background|backdrop)$"
)
_RELATION_WORDS = {"to the left of": "left of", "to the right of": "right of", "above": "above", "below": "below"}
_RELATION = re.compile(
    r"^(?P<desc>.*?) ?\b(?P<relation>" + "|".join(_RELATION_WORDS) + r") (?P<other>(?:a|an|the) .+)$"
)
_ASK_OPEN = re.compile(
    r"^what (?:else )?(?:can you tell me about it|is in the (?:picture|image|scene)|do you see"
    r"|is the main thing in the (?:picture|image|scene))$"
)
_ASK_VERIFY = re.compile(r"^(?:is|are) (?P<desc>the [\w ]+?) (?P<claim>(?:in|at|on) the [\w ]+|\w+)$")


def _normalise(question: str) -> str:
    text = question.lower().strip().rstrip("?.! ").strip()
    text = re.sub(r"\bcolor\b", "colour", text)
    text = re.sub(r"\b(?:center|middle)\b", "centre", text)
    return re.sub(r"\s+", " ", text)


def parse_descriptor(text: str) -> dict[str, str] | None:
    """Attributes named by a phrase like "the large red circle in the top left"; None if the
    phrase has a word the user does not understand."""
    attributes: dict[str, str] = {}
    positions = _POSITION_RE.findall(text)
    if len(positions) > 1:
        return None
    if positions:
        attributes["position"] = positions[0]
        text = _POSITION_RE.sub(" ", text)
    for word in text.split():
        if word in _FILLER:
            continue
        if word in COLOURS:
            name, value = "colour", word
        elif word in SIZES:
            name, value = "size", word
        elif word in _SHAPE_WORDS:
            name, value = "shape", _SHAPE_WORDS[word]
        else:
            return None
        if attributes.get(name, value) != value:
            return None
        attributes[name] = value
    return attributes


def _descriptor_words(attributes: dict[str, str]) -> str:
    words = [attributes[n] for n in ("size", "colour") if n in attributes]
    text = " ".join([*words, attributes.get("shape", "object")])
    if "position" in attributes:
        text += " " + POSITION_PHRASES[attributes["position"]]
    return text


class SimulatedUser:
    """A user who knows ``target`` and nothing else.

    **Relevance rule** (:meth:`feedback`): a candidate is relevant when it *is* the target (same
    id), or when the Jaccard similarity of its :meth:`~.graph.Scene.facts` with the target's
    facts is at least ``threshold`` (default 0.5). With ``max_relevant`` set, only the
    ``max_relevant`` most similar relevant candidates keep the mark (the target always first,
    ties by candidate order); every other candidate is marked not relevant.

    **Questions** (:meth:`answer`), case-insensitive, "color" accepted:
    "what colour/shape/size is the <descriptor>?", "what is the colour of the <descriptor>?",
    "where is the <descriptor>?", "how many <descriptor> are there?", "is there a
    <descriptor>?", "is the <descriptor> <attribute or position>?" ("is the circle red?"),
    "what is the background colour?". A descriptor combines a size, a colour, a
    shape (or "object", "something") and a position ("in the top left"); "is there" also takes a
    background ("is there a brown background?", "is there something on a black backdrop?") and a
    relation ("is there something above a small yellow star?"). Open questions ("what else can you
    tell me about it?", "what is the main thing in the picture?") get the objects, largest first.
    If the target determines one answer it is given ("red", "in the top left", "two", "yes"); if
    several objects match with different answers the reply is "there are several: ..." listing
    them; if none matches, "there is no ..."; anything else gets :data:`UNKNOWN`.
    """

    def __init__(self, target: Scene, threshold: float = 0.5) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold: {threshold} must lie in (0, 1]")
        self.target = target
        self.threshold = threshold
        self._facts = target.facts()

    def similarity(self, candidate: Scene) -> float:
        """Jaccard similarity of the candidate's facts with the target's, in [0, 1]."""
        if candidate.id == self.target.id:
            return 1.0
        other = candidate.facts()
        union = len(self._facts | other)
        return len(self._facts & other) / union if union else 0.0

    def feedback(self, candidates: Sequence[Scene], max_relevant: int | None = None) -> list[tuple[str, bool]]:
        """``(candidate id, relevant)`` for each candidate, in the given order."""
        if max_relevant is not None and max_relevant < 0:
            raise ValueError(f"max_relevant: {max_relevant} must be >= 0")
        scored = []
        for order, candidate in enumerate(candidates):
            is_target = candidate.id == self.target.id
            score = self.similarity(candidate)
            if is_target or score >= self.threshold:
                scored.append((not is_target, -score, order))
        scored.sort()
        if max_relevant is not None:
            scored = scored[:max_relevant]
        relevant = {order for _, _, order in scored}
        return [(c.id, order in relevant) for order, c in enumerate(candidates)]

    def describe(self, n_objects: int = 1) -> str:
        """A partial description: the first ``n_objects`` objects (largest first), no positions."""
        if n_objects < 1:
            raise ValueError(f"n_objects: {n_objects} must be >= 1")
        objects = size_order(self.target)[:n_objects]
        return "a picture with " + join_phrases([object_phrase(o, position=False) for o in objects])

    def _matching(self, attributes: dict[str, str]) -> list[SceneObject]:
        return [obj for obj in self.target.objects if object_matches(obj, attributes)]

    def answer(self, question: str) -> str:
        """A short answer about the target (see the class docstring), or :data:`UNKNOWN`."""
        q = _normalise(question)
        if _ASK_BACKGROUND.match(q):
            return self.target.background
        if _ASK_OPEN.match(q):  # an open question: what a person sees, the largest object first
            if "main thing" in q:
                return object_phrase(size_order(self.target)[0])
            return join_phrases([object_phrase(o) for o in size_order(self.target)])
        for pattern in _ASK_ATTRIBUTE:
            match = pattern.match(q)
            if match:
                return self._answer_attribute(match["attr"], match["desc"])
        match = _ASK_WHERE.match(q)
        if match:
            return self._answer_attribute("position", match["desc"])
        match = _ASK_COUNT.match(q)
        if match:
            attributes = parse_descriptor(match["desc"])
            if attributes is None:
                return UNKNOWN
            return number_word(len(self._matching(attributes)))
        match = _ASK_EXISTS.match(q)
        if match:
            return self._answer_exists(match["desc"])
        match = _ASK_VERIFY.match(q)
        if match:
            return self._answer_verify(match["desc"], match["claim"])
        logger.debug("cannot parse question %r", question)
        return UNKNOWN

    def _answer_exists(self, descriptor: str) -> str:
        """ "yes" or "no" for "a red circle", "something in the top left", "a brown background",
        "something above a small yellow star"; :data:`UNKNOWN` for words the user does not know."""
        background = _BACKGROUND.match(descriptor)
        if background:
            words = set(background["colour"].split())
            if not words <= {w for name in [*BACKGROUNDS, *COLOURS] for w in name.split()}:
                return UNKNOWN
            return "yes" if words <= set(self.target.background.split()) else "no"  # "grey" for dark grey
        relation = _RELATION.match(descriptor)
        if relation:
            first, other = parse_descriptor(relation["desc"]), parse_descriptor(relation["other"])
            if first is None or other is None:
                return UNKNOWN
            objects = self.target.objects
            holds = any(
                rel == _RELATION_WORDS[relation["relation"]]
                and object_matches(objects[i], first)
                and object_matches(objects[j], other)
                for i, rel, j in self.target.relations()
            )
            return "yes" if holds else "no"
        attributes = parse_descriptor(descriptor)
        if attributes is None:
            return UNKNOWN
        return "yes" if self._matching(attributes) else "no"

    def _answer_verify(self, descriptor: str, claim: str) -> str:
        attributes, claimed = parse_descriptor(descriptor), parse_descriptor(claim)
        if attributes is None or not claimed:
            return UNKNOWN
        matches = self._matching(attributes)
        if not matches:
            return f"there is no {_descriptor_words(attributes)}"
        if len(matches) > 1:
            return self._several(matches)
        return "yes" if object_matches(matches[0], claimed) else "no"

    def _several(self, matches: list[SceneObject]) -> str:
        matches = sorted(matches, key=lambda obj: POSITIONS.index(obj.position))
        return "there are several: " + join_phrases([object_phrase(obj) for obj in matches])

    def _answer_attribute(self, attribute: str, descriptor: str) -> str:
        attributes = parse_descriptor(descriptor)
        if attributes is None:
            return UNKNOWN
        matches = self._matching(attributes)
        if not matches:
            return f"there is no {_descriptor_words(attributes)}"
        values = {getattr(obj, attribute) for obj in matches}
        if len(values) == 1:
            value = values.pop()
            return POSITION_PHRASES[value] if attribute == "position" else value
        return self._several(matches)


_LOOSE_ANSWERS: dict[str, tuple[str, ...]] = {
    "yes": ("yes, there is one", "yep", "yes it is there", "it is there"),
    "no": ("nope", "no, there isn't", "no, none", "not that one"),
    "value": ("it is {a}", "it's {a}", "{a} I think", "{a}, yes"),
    "background": ("the background is {a}", "it's {a}", "{a} background"),
}


def reworded_answer(question: str, answer: str, rng) -> str:
    """A looser wording of the simulated user's ``answer`` ("yep", "it's blue", "the background is
    white"), as people answer: training data for a reformulator that must read more than the
    user's own short forms. Lists of several objects and "I don't know" keep their words."""
    if answer in ("yes", "no"):
        options = _LOOSE_ANSWERS[answer]
    elif _ASK_BACKGROUND.match(_normalise(question)):
        options = _LOOSE_ANSWERS["background"]
    elif answer != UNKNOWN and not answer.startswith(("there are several", "there is no")):
        options = _LOOSE_ANSWERS["value"]
    else:
        return answer
    return options[int(rng.integers(len(options)))].format(a=answer)
