"""Dialogue search (ChatIR, PlugIR): the system asks about the target, the person answers, and the
whole dialogue is rewritten into one caption-like query for the retriever, round after round.

Two parts, each with model-free baselines and a language-model version, none with a vocabulary of
any collection (the words come from the current hits' captions and the person's answers, read by
:mod:`.phrases`):

* **questioner**: ``random`` (about a random phrase of the candidates' captions: ChatIR's weakest
  baseline), ``grounded`` (PlugIR's idea without a model: "is there ...?" about the phrase of the
  best candidates' captions that splits them closest to half, never one the person already said or
  was asked, never twice), or a chat model with a prompt (its question is checked: one line, a
  question mark, bounded, not asked before; a refused question falls back to ``grounded`` and is
  marked in the trace). With no phrase left, an open question (:data:`GENERIC_QUESTIONS`);
* **reformulator**: ``concat`` (the first query and the dialogue joined, ChatIR's setting),
  ``rule`` (the first description with what the answers established: "yes, at the top" adds the
  asked phrase and "at the top", "it's blue" adds "blue"; "no" adds no words), or a chat model
  with a prompt (refused answers fall back to ``rule``).

Every round the session also orders the pipeline's candidates by what the answers said about their
captions (:class:`Facts`): those that name a phrase answered "no" drop below the others, those
that name more of what was confirmed rise (``use_answers``; not with ``concat``, ChatIR's setting).

The person (or a benchmark's simulated user) answers through :meth:`DialogueSession.answer`; an
answer that changes nothing ("I don't know") is said so in :attr:`DialogueSession.unchanged` and the
round's note.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ...errors import Error
from ..stages.state import QueryState
from ..store.search import Hit, QueryError, SearchResult
from .phrases import (
    DETERMINERS,
    FUNCTION_WORDS,
    PREPOSITIONS,
    STOP,
    Phrase,
    asked_phrase,
    caption_phrases,
    content_words,
    read_answer,
)

logger = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 120
MAX_ANSWER_CHARS = 200
MAX_ROUNDS = 20

GENERIC_QUESTIONS = (
    "what else can you tell me about it?",
    "what else is in the picture?",
    "what is the main thing in the picture?",
    "is there anything unusual about it?",
    "where was the picture taken?",
)
"""Open questions asked when no caption phrase is left to ask about (and after a language-model
questioner's refused question when none is left either); the person answers in their words."""
GENERIC_QUESTION = GENERIC_QUESTIONS[0]


class DialogueSetupError(Error, ValueError):
    """A dialogue was set up with parts that cannot run as given; the message says what to pass."""


@dataclass
class Turn:
    question: str
    answer: str
    source: str
    """Who wrote the question: ``random``, ``grounded``, ``generic``, ``llm`` or ``llm-fallback``."""


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


def question_phrase(question: str) -> Phrase | None:
    """The caption phrase a yes/no question asks about ("is there an orange car?" -> the thing
    "orange car"; "is there something in the kitchen?" -> the place "in the kitchen"), or None."""
    text = asked_phrase(question)
    if not text:
        return None
    words = text.split()
    if len(words) > 1 and words[0] in ("something", "anything") and words[1] in PREPOSITIONS:
        return Phrase(" ".join(words[1:]), "place", content_words(words[1:]))
    while words and words[0] in DETERMINERS:
        words = words[1:]
    content = content_words(words)
    return Phrase(" ".join(words), "thing", content) if content else None


@dataclass(frozen=True)
class Known:
    """What the dialogue has settled: the content words the person said (the first description and
    every answer), the contents already asked about, and the phrases answered "no"."""

    said: frozenset[str]
    asked: tuple[frozenset[str], ...]
    questions: frozenset[str]
    rejected: tuple[Phrase, ...]

    @classmethod
    def of(cls, first: str, turns: list[Turn]) -> Known:
        said, asked, rejected = set(content_words(first)), [], []
        for t in turns:
            reading = read_answer(t.question, t.answer)
            for phrase in reading.adds:
                said |= content_words(phrase)
            phrase = question_phrase(t.question)
            if phrase is not None:
                asked.append(phrase.content)
                if reading.rejects:
                    rejected.append(phrase)
        return cls(frozenset(said), tuple(asked), frozenset(_norm(t.question) for t in turns), tuple(rejected))

    def open(self, phrase: Phrase) -> bool:
        """Whether asking about ``phrase`` could tell something new: it names a content word not
        said, its content was not asked about, and no thing answered "no" is part of it."""
        if phrase.content <= self.said or phrase.content in self.asked:
            return False
        if _norm(phrase.question()) in self.questions:
            return False
        return not any(r.kind == phrase.kind == "thing" and r.content <= phrase.content for r in self.rejected)


def open_phrases(first: str, captions: list[str], turns: list[Turn]) -> list[tuple[Phrase, int]]:
    """The phrases of ``captions`` still worth asking about, each with the number of captions that
    name it, in the order they first appear (best hit first)."""
    known = Known.of(first, turns)
    counts: dict[Phrase, int] = {}
    for caption in captions:
        for phrase in sorted(caption_phrases(caption), key=lambda p: p.text):
            counts[phrase] = counts.get(phrase, 0) + 1
    return [(phrase, n) for phrase, n in counts.items() if known.open(phrase)]


def grounded_question(first: str, captions: list[str], turns: list[Turn]) -> str | None:
    """The next question, PlugIR's idea without a model: among the phrases the current hits'
    captions name (things with their modifiers, places), none the person already said or was asked
    about, the one whose presence splits the captions closest to half (the most information a yes
    or no can give); ties go to the more specific phrase (more content words), then to the phrase
    the best hits name. None when no phrase is left."""
    found = open_phrases(first, captions, turns)
    if not found:
        return None
    n = max(1, len(captions))
    order = {phrase: i for i, (phrase, _) in enumerate(found)}
    phrase, _ = min(found, key=lambda f: (abs(f[1] / n - 0.5), -len(f[0].content), -f[0].words, order[f[0]]))
    return phrase.question()


def random_question(rng: np.random.Generator, first: str, captions: list[str], turns: list[Turn]) -> str | None:
    """A question about a random phrase of the captions (ChatIR's weakest baseline, the words still
    from the captions), never one asked; None when no phrase is left."""
    found = open_phrases(first, captions, turns)
    return found[int(rng.integers(len(found)))][0].question() if found else None


def generic_question(asked: list[str]) -> str:
    """An open question not asked yet (the last one, numbered, once all were)."""
    done = {_norm(q) for q in asked}
    for question in GENERIC_QUESTIONS:
        if _norm(question) not in done:
            return question
    return f"what else can you tell me about it (question {len(asked) + 1})?"


def concatenate(first: str, turns: list[Turn]) -> str:
    """ChatIR's query: the first description and every question and answer, joined."""
    return ", ".join([first, *(f"{t.question} {t.answer}" for t in turns)])


def rule_reformulation(first: str, turns: list[Turn]) -> str:
    """A caption-like query from what the answers established (read by :func:`.phrases.read_answer`):
    the first description, with each phrase an answer adds: a place ("on the left") follows what
    the query names, a thing that ends with the same word as the first description's refines it
    ("a large car" and "a red car": "a large red car"), any other thing joins with "and", and a
    phrase that names nothing new is left out. "No" adds nothing here (the session demotes the
    candidates whose captions name what was rejected, :class:`Facts`); unusable answers ("I don't
    know") change nothing."""
    query = " ".join(first.split())
    for t in turns:
        for phrase in read_answer(t.question, t.answer).adds:
            query = add_phrase(query, phrase)
    return query


def add_phrase(query: str, phrase: str) -> str:
    """``query`` with ``phrase`` added (see :func:`rule_reformulation`)."""
    words = phrase.split()
    if len(words) > 1 and words[0] in ("something", "anything") and words[1] in PREPOSITIONS:
        words = words[1:]
    phrase = " ".join(words)
    if not content_words(phrase) - content_words(query):
        return query
    if words[0] in PREPOSITIONS:
        return f"{query} {phrase}"
    merged = _refine(query, words)
    if merged is not None:
        return merged
    joiner = " and " if words[0] in DETERMINERS or words[0] in FUNCTION_WORDS else ", "
    return f"{query}{joiner}{phrase}"


def _refine(query: str, words: list[str]) -> str | None:
    """The query's first thing with the phrase's modifiers, when both end with the same word ("a
    large car" + "a red car at the top" -> "a large red car at the top"); None otherwise."""
    while words and words[0] in DETERMINERS:
        words = words[1:]
    head_at = next((i for i, w in enumerate(words) if w in STOP), len(words))
    run, rest = words[:head_at], words[head_at:]
    q = query.split()
    start = next((i for i, w in enumerate(q) if w not in STOP and w[0].isalnum()), None)
    if not run or start is None:
        return None
    end = start + 1  # the query's first run of content words, up to a function word or a comma
    while end < len(q) and q[end] not in STOP and q[end][0].isalnum() and not q[end - 1].endswith((",", ";", ":")):
        end += 1
    head = q[end - 1].rstrip(",;:.")
    if run[-1] in ("one", "ones"):  # "a blue one": the query's thing
        run = [*run[:-1], head]
    if run[-1] in FUNCTION_WORDS or run[-1] != head:
        return None
    modifiers = [w for w in run[:-1] if w not in q[start : end - 1]]
    new = [*q[start : end - 1], *modifiers, q[end - 1]]
    before = q[:start]
    if before and before[-1] in ("a", "an"):
        before = [*before[:-1], "an" if new[0][0] in "aeiou" else "a"]
    return " ".join([*before, *new, *rest, *q[end:]])


@dataclass(frozen=True)
class Facts:
    """What the answers said of the picture, to check captions against: the phrases answered "no"
    (``rejected``) and "yes" (``confirmed``), and the content words of each free answer (``words``:
    "it's wooden" -> {"wooden"})."""

    rejected: frozenset[str]
    confirmed: frozenset[str]
    words: tuple[frozenset[str], ...]

    @property
    def confirmed_texts(self) -> list[str]:
        return [*self.confirmed, *(" ".join(sorted(w)) for w in self.words)]

    def key(self, caption: str) -> tuple[bool, int]:
        """(whether ``caption`` names a rejected phrase, minus how many confirmed facts it names):
        lower is more likely the picture."""
        named = {p.text for p in caption_phrases(caption)}
        content = content_words(caption)
        agree = len(named & self.confirmed) + sum(words <= content for words in self.words)
        return bool(named & self.rejected), -agree


def answered(turns: list[Turn]) -> Facts:
    """The :class:`Facts` the answers of ``turns`` state."""
    rejected, confirmed, words = set(), set(), []
    for t in turns:
        reading, phrase = read_answer(t.question, t.answer), question_phrase(t.question)
        if phrase is not None and reading.kind in ("yes", "no"):
            (confirmed if reading.kind == "yes" else rejected).add(phrase.text)
        for add in reading.adds:  # a free answer, a correction ("no, a blue one"), a yes's extra words
            if (content := content_words(add)) and (phrase is None or content - phrase.content):
                words.append(content)
    return Facts(frozenset(rejected), frozenset(confirmed), tuple(words))


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
    pool: int = 30
    """How many of the last round's candidates (best first, the k hits at least) the model-free
    questioners read the captions of (:meth:`question_captions`)."""
    use_answers: bool | None = None
    """Order each round's candidates by what the answers said about their captions (the generated
    caption, else the item's own text): those that name a phrase answered "no" go last, those that
    name more of what was confirmed ("yes", or an answer's own words) go first. None: with the
    ``rule`` and language-model reformulators, not with ``concat`` (ChatIR's setting: the query alone)."""
    first: str | None = None
    turns: list[Turn] = field(default_factory=list)
    results: list[SearchResult] = field(default_factory=list)
    pending: str | None = None
    notes: list[dict[str, Any]] = field(default_factory=list)
    state: QueryState | None = None
    unchanged: str | None = None
    """Why the last answer changed nothing ("'I don't know' says nothing about the picture"), or
    None when it changed the query or the hits' order; also in that round's note."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_rounds <= MAX_ROUNDS:
            raise DialogueSetupError(f"max_rounds must lie in 1..{MAX_ROUNDS}")
        for name, value, names in (
            ("questioner", self.questioner, ("random", "grounded")),
            ("reformulator", self.reformulator, ("concat", "rule")),
        ):
            if isinstance(value, str) and value not in names:
                raise DialogueSetupError(f"{name}: {value!r} is not one of {names} (or a (model, prompt) pair)")
        self._rng = np.random.default_rng([self.seed, 61])
        self._agree = 0
        if self.use_answers is None:
            self.use_answers = self.reformulator != "concat"

    @property
    def round(self) -> int:
        return len(self.results) - 1

    def search(self, text: str) -> SearchResult:
        """Round 0: the person's first description (this forgets an earlier dialogue)."""
        if not text or not text.strip():
            raise QueryError("the first description is empty")
        self.first, self.turns, self.results, self.pending, self.notes = text.strip(), [], [], None, []
        self.unchanged = None
        return self._run(self.first)

    def ask(self) -> str:
        """The next question about the target, grounded in the current hits' captions."""
        if not self.results:
            raise QueryError("search first: there is nothing to ask about yet")
        if self.round + 1 >= self.max_rounds:
            raise QueryError(f"this dialogue stops after {self.max_rounds} rounds")
        asked = [t.question for t in self.turns]
        captions = self.question_captions()
        note: dict[str, Any] = {"round": self.round + 1}
        if isinstance(self.questioner, tuple):
            question, note = self._ask_model(captions, asked, note)
        elif self.questioner == "random":
            question, note["source"] = random_question(self._rng, self.first or "", captions, self.turns), "random"
        else:
            question, note["source"] = grounded_question(self.first or "", captions, self.turns), "grounded"
        if question is None:
            question, note["source"] = generic_question(asked), "generic"
        self.pending = question
        self.notes.append(note | {"question": question})
        return question

    def answer(self, text: str) -> SearchResult:
        """The person's answer to the pending question; runs the next round. When the answer
        changes nothing (:attr:`unchanged` says why), the round still runs, with the same query."""
        if self.pending is None:
            raise QueryError("there is no question to answer: call ask() first")
        answer = " ".join((text or "").split())
        if not answer:
            raise QueryError("the answer is empty")
        if len(answer) > MAX_ANSWER_CHARS:
            raise QueryError(f"the answer is {len(answer)} characters long; keep it under {MAX_ANSWER_CHARS}")
        reading = read_answer(self.pending, answer)
        before = self.results[-1].query
        self.turns.append(Turn(self.pending, answer, self.notes[-1]["source"]))
        self.pending = None
        note = self.notes[-1]
        note["reading"] = {"kind": reading.kind, "adds": reading.adds, "rejects": reading.rejects}
        query = self._reformulate()
        self.unchanged = reading.problem if not reading.useful else None
        if self.unchanged is None and not reading.rejects and query == before:
            self.unchanged = f"the query already says {'; '.join(reading.adds)!r}"
        if self.unchanged is not None:
            note["unchanged"] = self.unchanged
            logger.info("round %d: the answer changed nothing: %s", self.round + 1, self.unchanged)
        return self._run(query)

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
        result = self.pipeline.run_round(self.state)
        self._agree = len(self.state.candidates)
        if self.use_answers and self.turns:
            result = self._order_by_answers(result)
        self.results.append(result)
        return result

    def _order_by_answers(self, result: SearchResult) -> SearchResult:
        """The candidates whose captions name a phrase answered "no" moved below the others, and
        those that name more of what the answers confirmed above; the pipeline's order otherwise."""
        assert self.state is not None
        facts = answered(self.turns)
        if not facts.rejected and not facts.confirmed:
            return result
        candidates = self.state.candidates
        keys = [facts.key(c.caption or c.text or "") for c in candidates]
        order = sorted(range(len(candidates)), key=lambda i: (keys[i], i))
        self._agree = sum(keys[i] == keys[order[0]] for i in order) if order else 0
        self.state.candidates = [candidates[i] for i in order]
        hits = [
            Hit(rank, c.id, c.key, c.path, c.score, c.text, c.metadata, dict(c.scores), c.caption)
            for rank, c in enumerate(self.state.candidates[: self.state.k], start=1)
        ]
        moved = {"rejected": sorted(facts.rejected), "confirmed": sorted(facts.confirmed_texts),
                 "demoted": sum(k[0] for k in keys), "agree": self._agree}  # fmt: skip
        return replace(result, hits=hits, trace=dict(result.trace or {}) | {"answers": moved})

    def question_captions(self) -> list[str]:
        """The captions the model-free questioners read: the last round's best :attr:`pool`
        candidates (the k hits at least), only those every answer so far agrees with when two or more
        do; a candidate's caption is its generated one, else its own text."""
        if self.state is None:
            return [h.caption or h.text or "" for h in self.results[-1].hits] if self.results else []
        pool = self.state.candidates[: max(self.pool, self.k)]
        if 2 <= self._agree < len(pool):
            pool = pool[: self._agree]
        return [c.caption or c.text or "" for c in pool]

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
            question = grounded_question(self.first or "", captions, self.turns) or generic_question(asked)
        return question, note

    def _reformulate(self) -> str:
        first = self.first or ""
        if self.reformulator == "concat":
            return concatenate(first, self.turns)
        if self.reformulator == "rule":
            return rule_reformulation(first, self.turns)
        from ..llm.ask import ask_for_query
        from ..llm.prompts import quoted

        llm, prompt = self.reformulator  # type: ignore[misc]
        record = ask_for_query(llm, prompt, {"query": quoted(first), "dialogue": quoted(self._dialogue())})
        self.notes[-1]["reformulation"] = {"raw": record["raw"], "query": record["query"], "problem": record["problem"]}
        return record["query"] or rule_reformulation(first, self.turns)

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
    "GENERIC_QUESTIONS",
    "DialogueSession",
    "DialogueSetupError",
    "Known",
    "Turn",
    "add_phrase",
    "best_log_rank_integral",
    "check_question",
    "concatenate",
    "dialogue_lines",
    "generic_question",
    "grounded_question",
    "open_phrases",
    "question_phrase",
    "random_question",
    "Facts",
    "answered",
    "rule_reformulation",
]
