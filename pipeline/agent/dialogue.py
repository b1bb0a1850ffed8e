"""Dialogue search (ChatIR, PlugIR): the system asks about the target, the person answers, and the
whole dialogue is rewritten into one caption-like query for the retriever, round after round.

Two parts, each with model-free baselines and a language-model version:

* **questioner**: ``random`` (a template question about a random attribute: ChatIR's weakest
  baseline), ``grounded`` (PlugIR's idea without a model: among the objects the current hits'
  captions mention, ask about the one they disagree on most, never twice), or a chat model with a
  prompt (its question is checked: one line, a question mark, bounded, not asked before; a refused
  question falls back to ``grounded`` and is marked in the trace);
* **reformulator**: ``concat`` (the first query and the dialogue joined, ChatIR's setting),
  ``rule`` (the answers the person gave, as object phrases added to the first query), or a chat
  model with a prompt (refused answers fall back to ``rule``).

The person (or the scene benchmark's simulated user, :meth:`..scenes.simuser.SimulatedUser.answer`)
answers through :meth:`DialogueSession.answer`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ...errors import Error
from ..stages.state import QueryState
from ..store.search import QueryError, SearchResult

MAX_QUESTION_CHARS = 120
MAX_ANSWER_CHARS = 200
MAX_ROUNDS = 20

BACKGROUND_QUESTION = "what is the background colour?"
SEVERAL = "there are several: "
"""How an answer about several matching objects starts; it lists them (as the simulated user does)."""
_YES = re.compile(r"^(yes|yeah|yep|there is|there are)\b")
_WHERE = re.compile(r"^where is the (?P<obj>.+?)\??$")
_IS_THERE = re.compile(r"^is there an? (?P<obj>.+?)\??$")
GENERIC_QUESTION = "what else can you tell me about it?"
"""Asked when a language-model questioner's question is refused and no vocabulary is known."""


class DialogueSetupError(Error, ValueError):
    """A dialogue was set up with parts that cannot run as given; the message says what to pass."""


@dataclass(frozen=True)
class Vocabulary:
    """The words the model-free questioner and reformulator know of a collection: objects are
    "<colour> <shape>" phrases with a size, placed by a position phrase, on a background. The agent
    holds no vocabulary of its own: whoever knows the collection passes one in (the scene benchmark's
    comes from :func:`viewfinder.pipeline.eval.dialogue.scene_vocabulary`). Language-model questioners
    and reformulators need none."""

    colours: tuple[str, ...]
    shapes: tuple[str, ...]
    sizes: tuple[str, ...]
    positions: tuple[str, ...]
    """Position phrases ("in the top left")."""
    backgrounds: tuple[str, ...]

    def __post_init__(self) -> None:
        for name in ("colours", "shapes", "sizes", "positions", "backgrounds"):
            if not getattr(self, name):
                raise ValueError(f"Vocabulary.{name} must not be empty")

    @cached_property
    def object_re(self) -> re.Pattern[str]:
        return re.compile(
            r"\b(" + "|".join(map(re.escape, self.colours)) + r") (" + "|".join(map(re.escape, self.shapes)) + r")\b"
        )

    @cached_property
    def position_re(self) -> re.Pattern[str]:
        return re.compile(r"\b(" + "|".join(map(re.escape, self.positions)) + r")\b")

    def values(self, slot: str) -> tuple[str, ...]:
        return {"colour": self.colours, "shape": self.shapes, "size": self.sizes, "position": self.positions}[slot]


@dataclass
class Turn:
    question: str
    answer: str
    source: str
    """Who wrote the question: ``random``, ``grounded``, ``llm`` or ``llm-fallback``."""


def _norm(question: str) -> str:
    return " ".join(question.lower().rstrip("?").split())


def check_question(text: str | None, asked: list[str]) -> tuple[str | None, str | None]:
    """(the question, None) if it can be asked, else (None, why not)."""
    if not text or not text.strip():
        return None, "empty"
    question = text.strip().splitlines()[0].strip().strip('"')
    if len(question) > MAX_QUESTION_CHARS:
        return None, f"longer than {MAX_QUESTION_CHARS} characters"
    if not question.endswith("?"):
        return None, "not a question"
    if _norm(question) in {_norm(q) for q in asked}:
        return None, "already asked"
    return question, None


def mentioned_objects(caption: str, vocab: Vocabulary) -> set[str]:
    """The "colour shape" phrases a caption names."""
    return {f"{colour} {shape}" for colour, shape in vocab.object_re.findall(caption.lower())}


_SLOTS = ("colour", "shape", "size", "position")


@dataclass
class ObjectSlots:
    """What is known of the object the first description names: colour, shape, size, position."""

    colour: str | None = None
    shape: str | None = None
    size: str | None = None
    position: str | None = None
    """A position phrase ("in the top left")."""

    @classmethod
    def parse(cls, text: str, vocab: Vocabulary) -> ObjectSlots:
        words = re.findall(r"[a-z]+", text.lower())
        found = vocab.position_re.search(text.lower())
        return cls(
            colour=next((w for w in words if w in vocab.colours), None),
            shape=next((w for w in words if w in vocab.shapes), None),
            size=next((w for w in words if w in vocab.sizes), None),
            position=found[1] if found else None,
        )

    def words(self) -> str:
        """ "large red circle in the top left", "red object" (no article)."""
        noun = " ".join(w for w in (self.size, self.colour, self.shape or "object") if w)
        return f"{noun} {self.position}" if self.position else noun

    def fill(self, slot: str, answer: str, vocab: Vocabulary) -> None:
        """Take the answer to the question about ``slot`` when it names one value."""
        answer = answer.lower().strip().rstrip(".")
        if answer in vocab.values(slot):
            setattr(self, slot, answer)


def slot_question(slots: ObjectSlots, slot: str) -> str:
    if slot == "position":
        return f"where is the {slots.words()}?"
    return f"what {slot} is the {slots.words()}?"


def _slot_of(question: str) -> str | None:
    q = _norm(question)
    if q.startswith("where is the "):
        return "position"
    m = re.match(r"^what (colour|shape|size) is the ", q)
    return m[1] if m else None


def known_slots(first: str, turns: list[Turn], vocab: Vocabulary) -> ObjectSlots:
    """The first description's object, with the answers to slot questions filled in (a "where is"
    question about another object, one asked about with "is there", is not about this one)."""
    slots = ObjectSlots.parse(first, vocab)
    others = {m["obj"] for t in turns if (m := _IS_THERE.match(_norm(t.question)))}
    for t in turns:
        slot = _slot_of(t.question)
        where = _WHERE.match(_norm(t.question))
        if slot is None or (slot == "position" and where and where["obj"] in others):
            continue
        slots.fill(slot, t.answer, vocab)
    return slots


def grounded_question(first: str, captions: list[str], turns: list[Turn], vocab: Vocabulary) -> str | None:
    """The next question, PlugIR-style but without a model, never one already asked:

    1. what the first description leaves open about its object (its colour, shape, size, place);
    2. the background colour;
    3. "is there a <colour shape>?" for the object nearest half of the current hits' captions
       mention (the one that splits them best), and "where is the <colour shape>?" for one the
       person said is there.

    None when every such question was asked."""
    done = {_norm(t.question) for t in turns}
    slots = known_slots(first, turns, vocab)
    for slot in _SLOTS:
        if getattr(slots, slot) is None:
            question = slot_question(slots, slot)
            if _norm(question) not in done:
                return question
    if _norm(BACKGROUND_QUESTION) not in done:
        return BACKGROUND_QUESTION
    for t in turns:
        if (m := _IS_THERE.match(_norm(t.question))) and _YES.match(t.answer.lower()):
            where = f"where is the {m['obj']}?"
            if _norm(where) not in done:
                return where
    counts: dict[str, int] = {}
    own = f"{slots.colour} {slots.shape}"  # the first description's object: known already
    for caption in captions:
        for obj in mentioned_objects(caption, vocab) - {own}:
            counts[obj] = counts.get(obj, 0) + 1
    n = max(1, len(captions))
    for obj in sorted(counts, key=lambda o: (abs(counts[o] / n - 0.5), o)):
        question = f"is there a {obj}?"
        if _norm(question) not in done:
            return question
    return None


def random_question(rng: np.random.Generator, asked: list[str], vocab: Vocabulary) -> str:
    """A template question about a random colour and shape (or the background), never one asked."""
    done = {_norm(q) for q in asked}
    for _ in range(100):
        kind = int(rng.integers(4))
        colours, shapes = vocab.colours, vocab.shapes
        colour, shape = colours[int(rng.integers(len(colours)))], shapes[int(rng.integers(len(shapes)))]
        question = (
            f"is there a {colour} {shape}?",
            f"what colour is the {shape}?",
            f"where is the {colour} {shape}?",
            "what is the background colour?",
        )[kind]
        if _norm(question) not in done:
            return question
    return "how many objects are there?"


def concatenate(first: str, turns: list[Turn]) -> str:
    """ChatIR's query: the first description and every question and answer, joined."""
    return ", ".join([first, *(f"{t.question} {t.answer}" for t in turns)])


def rule_reformulation(first: str, turns: list[Turn], vocab: Vocabulary) -> str:
    """A caption-like query from what the answers established: the first description's object with
    the attributes the person named, the background, the other objects said to be there (with
    where they are, when asked) and the objects an answer about several lists; "no" answers add
    nothing."""
    slots = known_slots(first, turns, vocab)
    others: dict[str, str] = {}
    background = None
    for t in turns:
        question, answer = _norm(t.question), t.answer.lower().strip().rstrip(".")
        if question == _norm(BACKGROUND_QUESTION) and answer in vocab.backgrounds:
            background = answer
        elif (m := _IS_THERE.match(question)) and _YES.match(answer):
            others.setdefault(m["obj"], "")
        elif (m := _WHERE.match(question)) and m["obj"] in others and answer in vocab.positions:
            others[m["obj"]] = answer
        elif answer.startswith(SEVERAL):  # the answer lists objects of the picture: all facts
            for phrase in re.split(r", | and ", answer.removeprefix(SEVERAL)):
                others.setdefault(phrase.strip().removeprefix("a ").removeprefix("an "), "")
    phrases = [f"a {slots.words()}", *(f"a {obj} {where}".strip() for obj, where in others.items())]
    text = " and ".join(phrases)
    return f"on a {background} background: {text}" if background else text


@dataclass
class DialogueSession:
    """A dialogue over a pipeline: :meth:`search`, then :meth:`ask` / :meth:`answer` rounds."""

    pipeline: Any
    questioner: str | tuple[Any, Any] = "grounded"
    """``random``, ``grounded``, or (chat model, prompt) for the language-model questioner."""
    reformulator: str | tuple[Any, Any] = "rule"
    """``concat``, ``rule``, or (chat model, prompt)."""
    k: int = 10
    max_rounds: int = 10
    seed: int = 0
    model_captions: int = 3
    """Captions of the best hits a language-model questioner is shown (the prompt stays short)."""
    vocabulary: Vocabulary | None = None
    """The collection's words, for the model-free questioners (``random``, ``grounded``) and the
    ``rule`` reformulator, and for the fallbacks of language-model ones (without it, a refused
    question becomes a generic one and a refused reformulation the ``concat`` query)."""
    first: str | None = None
    turns: list[Turn] = field(default_factory=list)
    results: list[SearchResult] = field(default_factory=list)
    pending: str | None = None
    notes: list[dict[str, Any]] = field(default_factory=list)
    state: QueryState | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.max_rounds <= MAX_ROUNDS:
            raise DialogueSetupError(f"max_rounds must lie in 1..{MAX_ROUNDS}")
        for name, value, names in (
            ("questioner", self.questioner, ("random", "grounded")),
            ("reformulator", self.reformulator, ("concat", "rule")),
        ):
            if isinstance(value, str) and value not in names:
                raise DialogueSetupError(f"{name}: {value!r} is not one of {names} (or a (model, prompt) pair)")
            if isinstance(value, str) and value != "concat" and self.vocabulary is None:
                raise DialogueSetupError(
                    f"the {value!r} {name} needs the collection's vocabulary (DialogueSession(vocabulary=...)); "
                    "a language-model one, or the 'concat' reformulator, needs none"
                )
        self._rng = np.random.default_rng([self.seed, 61])

    @property
    def round(self) -> int:
        return len(self.results) - 1

    def search(self, text: str) -> SearchResult:
        """Round 0: the person's first description (this forgets an earlier dialogue)."""
        if not text or not text.strip():
            raise QueryError("the first description is empty")
        self.first, self.turns, self.results, self.pending, self.notes = text.strip(), [], [], None, []
        return self._run(self.first)

    def ask(self) -> str:
        """The next question about the target, grounded in the current hits' captions."""
        if not self.results:
            raise QueryError("search first: there is nothing to ask about yet")
        if self.round + 1 >= self.max_rounds:
            raise QueryError(f"this dialogue stops after {self.max_rounds} rounds")
        asked = [t.question for t in self.turns]
        captions = [h.caption or h.text or "" for h in self.results[-1].hits]
        note: dict[str, Any] = {"round": self.round + 1}
        if isinstance(self.questioner, tuple):
            question, note = self._ask_model(captions, asked, note)
        elif self.questioner == "random":
            question, note["source"] = random_question(self._rng, asked, self._vocab), "random"
        else:
            question, note["source"] = self._grounded(captions, asked), "grounded"
        self.pending = question
        self.notes.append(note | {"question": question})
        return question

    def answer(self, text: str) -> SearchResult:
        """The person's answer to the pending question; runs the next round."""
        if self.pending is None:
            raise QueryError("there is no question to answer: call ask() first")
        answer = " ".join((text or "").split())
        if not answer:
            raise QueryError("the answer is empty")
        if len(answer) > MAX_ANSWER_CHARS:
            raise QueryError(f"the answer is {len(answer)} characters long; keep it under {MAX_ANSWER_CHARS}")
        self.turns.append(Turn(self.pending, answer, self.notes[-1]["source"]))
        self.pending = None
        return self._run(self._reformulate())

    @property
    def trace(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline.name,
            "first": self.first,
            "turns": [asdict(t) for t in self.turns],
            "questions": self.notes,
            "rounds": [
                {"round": i, "query": r.query, "hits": [h.id for h in r.hits], "trace": r.trace}
                for i, r in enumerate(self.results)
            ],  # fmt: skip
        }

    def _run(self, query: str) -> SearchResult:
        self.state = QueryState(query=query, text=query, k=self.k)
        self.results.append(self.pipeline.run_round(self.state))
        return self.results[-1]

    def candidate_keys(self) -> list[str]:
        """Keys of every candidate of the last round, best first (deeper than the k hits shown)."""
        return [c.key for c in self.state.candidates] if self.state is not None else []

    def _ask_model(self, captions: list[str], asked: list[str], note: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        from ..llm.ask import ask_for_query
        from ..llm.prompts import quoted

        llm, prompt = self.questioner  # type: ignore[misc]
        values = {"query": quoted(self.first or ""), "dialogue": quoted(self._dialogue()),
                  "captions": quoted(captions[: self.model_captions])}  # fmt: skip
        record = ask_for_query(llm, prompt, values, max_chars=MAX_QUESTION_CHARS)
        question, problem = check_question(record["raw"], asked)
        note.update(prompt=record["prompt"], raw=record["raw"], source="llm")
        if question is None:
            note.update(source="llm-fallback", problem=problem)
            question = self._grounded(captions, asked) if self.vocabulary is not None else GENERIC_QUESTION
        return question, note

    @property
    def _vocab(self) -> Vocabulary:
        assert self.vocabulary is not None  # checked in __post_init__ for every model-free part
        return self.vocabulary

    def _grounded(self, captions: list[str], asked: list[str]) -> str:
        return grounded_question(self.first or "", captions, self.turns, self._vocab) or random_question(
            self._rng, asked, self._vocab
        )

    def _reformulate(self) -> str:
        first = self.first or ""
        if self.reformulator == "concat":
            return concatenate(first, self.turns)
        if self.reformulator == "rule":
            return rule_reformulation(first, self.turns, self._vocab)
        from ..llm.ask import ask_for_query
        from ..llm.prompts import quoted

        llm, prompt = self.reformulator  # type: ignore[misc]
        record = ask_for_query(llm, prompt, {"query": quoted(first), "dialogue": quoted(self._dialogue())})
        self.notes[-1]["reformulation"] = {"raw": record["raw"], "query": record["query"], "problem": record["problem"]}
        if record["query"]:
            return record["query"]
        return (
            rule_reformulation(first, self.turns, self.vocabulary)
            if self.vocabulary
            else concatenate(first, self.turns)
        )

    def _dialogue(self) -> list[str]:
        return dialogue_lines(self.turns)


def dialogue_lines(turns: list[Turn]) -> list[str]:
    """The dialogue as the prompts quote it: ``["Q: ... A: ...", ...]``."""
    return [f"Q: {t.question} A: {t.answer}" for t in turns]


def best_log_rank_integral(ranks: np.ndarray) -> float:
    """After PlugIR's BRI: the mean over dialogues of the area under log(best rank so far) across
    rounds 0..T (trapezoids), divided by T. Lower is better; 0 when the target is first from the
    start. ``ranks``: (dialogues, rounds), the target's rank each round, >= 1 and finite (cap a
    rank past the candidates, e.g. at their number + 1)."""
    best = np.minimum.accumulate(np.asarray(ranks, dtype=float), axis=1)
    logs = np.log(best)
    rounds = logs.shape[1] - 1
    if rounds < 1:
        return float(logs.mean())
    area = (logs[:, :-1] + logs[:, 1:]).sum(axis=1) / 2
    return float((area / rounds).mean())


__all__ = [
    "DialogueSession",
    "Turn",
    "best_log_rank_integral",
    "check_question",
    "concatenate",
    "dialogue_lines",
    "ObjectSlots",
    "Vocabulary",
    "grounded_question",
    "mentioned_objects",
    "random_question",
    "rule_reformulation",
]
