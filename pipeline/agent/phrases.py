"""Phrases of captions and answers, read with a small list of English function words and nothing
else: no vocabulary of any collection.

* :func:`caption_phrases`: the phrases a caption names, each a *thing* ("large wooden chair",
  "wooden chair", "chair": a run of content words after an article, and the runs it ends with,
  because English puts the head noun last) or a *place* ("in the kitchen": a preposition and the
  whole run after it, since "in the top left" does not imply "in the left");
* :func:`read_answer`: what a person's answer to a question says: "yes" (with any extra words, "yes,
  at the top"), "no" (with a correction, "no, a blue one"), a free answer ("it's blue", "a dog on the
  left"), or nothing usable ("I don't know", "hmm").

The dialogue's questioner (:func:`..dialogue.grounded_question`) asks about caption phrases and its
reformulator (:func:`..dialogue.rule_reformulation`) builds the query from what the answers say.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

ARTICLES = frozenset({"a", "an", "the"})
DETERMINERS = ARTICLES | frozenset(
    "some any this that these those its their his her my your our another each every no either neither".split()
)
PREPOSITIONS = frozenset(
    """in on at near by beside besides behind under underneath below beneath above over across along
    around inside outside into onto from to toward towards between among against next through past
    upon within atop off up down""".split()
)
BREAKS = frozenset(
    """and or but also plus then while whereas where which that who whom whose with without of for as
    than because so yet nor""".split()
)
"""Words that end a phrase: conjunctions, relative words and the prepositions that join two things
("a cat *with* a hat", "the left *of* the box")."""
VERBS = frozenset(
    """is are was were be been being am isn't aren't wasn't weren't has have had having does do did
    sits sit sitting sat stands stand standing stood lies lie lying lay rests resting appears appear
    seems seem looks look looking shows show showing shown depicts depicting depicted contains contain
    containing features featuring featured includes including see sees seen saw visible can could
    would should will may might must""".split()
)
"""Auxiliaries and the verbs captions use to present what they show; they end a phrase."""
BOILERPLATE = frozenset("picture pictures image images photo photos photograph scene view shot we i you".split())
"""What a caption says about itself ("a picture showing ...", "we see ..."), not about the picture."""
PRONOUNS = frozenset("it they them he she him there here something anything nothing everything".split())
WEAK = frozenset(
    """one ones two three four five six seven eight nine ten eleven twelve several many few both all
    couple lot lots object objects thing things item items stuff kind sort type bit part other others
    more most less least very quite rather really just only too same different""".split()
)
"""Words that may sit inside a phrase but say too little to ask about alone (counts, "object",
"thing", degree words)."""
STOP = ARTICLES | DETERMINERS | PREPOSITIONS | BREAKS | VERBS | BOILERPLATE | PRONOUNS
FUNCTION_WORDS = STOP | WEAK
"""Every word that is not *content*: a phrase is asked about only for its content words."""

_TOKEN = re.compile(r"[a-z0-9]+(?:['’-][a-z0-9]+)*|[,;:.!?()\"/]")
MAX_WORDS = 4
"""A phrase's run is at most this many words ("small red wooden chair", "in the top left corner")."""


def tokens(text: str) -> list[str]:
    """Lower-case words and punctuation marks: ``"A dog, left." -> ["a", "dog", ",", "left", "."]``."""
    return _TOKEN.findall(text.lower().replace("’", "'"))


def content_words(text: str | Iterable[str]) -> frozenset[str]:
    """The words of ``text`` that are not function words (counts and "object" are not content)."""
    words = tokens(text) if isinstance(text, str) else list(text)
    return frozenset(w for w in words if w[0].isalnum() and w not in FUNCTION_WORDS)


def with_article(phrase: str) -> str:
    """ "an orange car", "a dog", "dogs" (a plural, or a phrase that starts with a determiner or a
    count, keeps its words)."""
    first, last = phrase.split()[0], phrase.split()[-1]
    if first in DETERMINERS or first in WEAK or _plural(last):
        return phrase
    return ("an " if first[0] in "aeiou" else "a ") + phrase


def _plural(word: str) -> bool:
    return len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is", "ous"))


@dataclass(frozen=True)
class Phrase:
    """A phrase of a caption: ``text`` as asked about ("orange car", "in the kitchen")."""

    text: str
    kind: Literal["thing", "place"]
    content: frozenset[str]

    @property
    def words(self) -> int:
        return len(self.text.split())

    def question(self) -> str:
        """ "is there an orange car?", "are there dogs?", "is there something in the kitchen?"."""
        if self.kind == "place":
            return f"is there something {self.text}?"
        phrase = with_article(self.text)
        verb = "are" if _plural(self.text.split()[-1]) and phrase == self.text else "is"
        return f"{verb} there {phrase}?"


def _boundary(word: str) -> bool:
    return not word[0].isalnum() or word in BREAKS or word in VERBS or word in BOILERPLATE


def caption_phrases(caption: str) -> set[Phrase]:
    """The thing and place phrases ``caption`` names (see the module docstring). A run followed by
    "of" is left out ("the left of the box" does not name a place on its own)."""
    words = tokens(caption)
    found: set[Phrase] = set()
    lead: list[str] = []
    i = 0
    while i < len(words):
        if _boundary(words[i]):
            lead, i = [], i + 1
            continue
        if words[i] in STOP:
            lead.append(words[i])
            i += 1
            continue
        j = i
        while j < len(words) and not _boundary(words[j]) and words[j] not in STOP:
            j += 1
        run, after = words[i:j], words[j] if j < len(words) else None
        found |= _run_phrases(lead, run) if after != "of" else set()
        lead, i = [], j
    return found


def _run_phrases(lead: list[str], run: list[str]) -> set[Phrase]:
    """The phrases of one run of content words and the function words before it."""
    content = content_words(run)
    if not content or len(set(run)) < len(run):  # a run that repeats a word names nothing
        return set()
    found: set[Phrase] = set()
    preposition = next((w for w in lead if w in PREPOSITIONS), None)
    if preposition is not None:  # a place: the preposition, its article, the whole run
        if len(run) <= MAX_WORDS:
            found.add(Phrase(" ".join(lead[lead.index(preposition) :] + run), "place", content))
        if lead[-1] not in ("a", "an"):  # "beside a wooden fence" names a fence too; "in the kitchen" no thing
            return found
    for start in range(len(run)):  # a thing: the run and every run it ends with
        tail = run[start:]
        if tail[0] in WEAK or tail[-1] in WEAK or len(tail) > MAX_WORDS or not content_words(tail):
            continue
        found.add(Phrase(" ".join(tail), "thing", content_words(tail)))
    return found


# Answers -----------------------------------------------------------------------------------------

_YES = frozenset("yes yeah yep yup ya yea sure indeed correct definitely certainly absolutely".split())
_NO = frozenset("no nope nah not none never negative".split())
_UNKNOWN = re.compile(
    r"\b(?:i )?(?:don'?t|do not|dunno|can'?t|cannot|could not|couldn'?t) (?:know|tell|say|see|remember|be sure)"
    r"|\bno idea\b|\bnot sure\b|\bunsure\b|\bno clue\b|\bhard to (?:say|tell)\b|\bi forgot\b|^\W*$|^dunno\b"
)
_OPENERS = re.compile(
    r"^(?:(?:well|um+|uh+|hmm+|oh|ah|so|ok|okay|i think|i guess|i believe|i'd say|i would say|maybe|probably|"
    r"perhaps|actually|mostly|it's|it is|its|they're|they are|there's|there is|there are|there was|"
    r"there were|i see|you can see|you see|that's|that is|this is|several|all|both)\b[\s,:;.!-]*)+"
)
_CLOSERS = re.compile(r"[\s,;.!-]*\b(?:i think|i guess|i believe|probably|maybe|too|as well|though)\W*$")
_FILLER_REPLIES = re.compile(
    r"^(?:(?:there is|there are|there's|it is|it's|they are|that is|that's|one|ones|some|it|them|that|"
    r"there|is|are|isn't|aren't|is not|are not|any|none|in it|in the picture|in the image)\b\W*)*$"
)
_IS_THERE = re.compile(r"^(?:is|are) there (?P<phrase>.+?)\W*$")


@dataclass
class Answer:
    """What an answer says: ``kind`` is ``yes``, ``no``, ``free`` or ``unknown``; ``adds`` the
    phrases it establishes (the asked phrase with a "yes", and any words beyond yes or no);
    ``rejects`` what it says is not there (the asked phrase with a "no"); ``problem`` why it
    changes nothing, when it does not."""

    kind: Literal["yes", "no", "free", "unknown"]
    adds: list[str] = field(default_factory=list)
    rejects: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def useful(self) -> bool:
        return bool(self.adds or self.rejects)


def asked_phrase(question: str) -> str | None:
    """The phrase a yes/no question asks about: "is there an orange car?" -> "an orange car",
    "is there something in the kitchen?" -> "something in the kitchen"; None for other questions."""
    match = _IS_THERE.match(" ".join(w for w in tokens(question) if w[0].isalnum()))
    return match["phrase"].strip() if match else None


def _rest(words: list[str]) -> str:
    """An answer's words after its opening yes or no, without fillers: "yes, at the top" -> "at
    the top"; "yes, there is one" -> ""."""
    text = " ".join(w for w in words if w[0].isalnum() or w in ",;:")
    text = _CLOSERS.sub("", _OPENERS.sub("", text.strip(" ,;:"))).strip(" ,;:")
    return "" if _FILLER_REPLIES.match(text) or not content_words(text) and not _has_count(text) else text


def _has_count(text: str) -> bool:
    return bool(re.search(r"\b(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten)\b", text))


def read_answer(question: str, answer: str) -> Answer:
    """Read a person's ``answer`` to ``question`` (see :class:`Answer`)."""
    words = tokens(answer)
    text = " ".join(w for w in words if w[0].isalnum())
    phrase = asked_phrase(question)
    if not text or _UNKNOWN.search(text):
        return Answer("unknown", problem=f"{answer.strip()!r} says nothing about the picture")
    first = words[0]
    negative = first in _NO or re.match(r"^(?:there (?:is|are) no|there'?s no|there isn'?t|there aren'?t)\b", text)
    if negative:
        if re.match(r"^(?:there (?:is|are) no|there'?s no)\b", text):  # "there is no red car": what it names
            named = re.sub(r"^(?:there (?:is|are) no|there'?s no)\s+", "", text)
            return Answer("no", rejects=[named] if content_words(named) else [phrase] if phrase else [])
        rest = _rest(words[1:])
        rest = re.sub(r"^(?:there (?:isn'?t|aren'?t|is not|are not)|i don'?t think so|not really)\b\W*", "", rest)
        adds = [rest] if rest and content_words(rest) else []
        rejects = [phrase] if phrase else []
        if not adds and not rejects:
            return Answer("no", problem=f"a plain 'no' to {question.strip()!r}, which is no yes/no question")
        return Answer("no", adds=adds, rejects=rejects)
    if first in _YES or re.match(r"^(?:there (?:is|are)|it is there|they are there)\b\W*(?:one|some)?\W*$", text):
        rest = _rest(words[1:]) if first in _YES else ""
        if phrase is None:
            if rest:
                return Answer("yes", adds=[rest])
            return Answer("yes", problem=f"a plain 'yes' to {question.strip()!r}, which is no yes/no question")
        return Answer("yes", adds=[f"{phrase} {rest}".strip()])
    rest = _rest(words)
    if not rest:
        return Answer("unknown", problem=f"{answer.strip()!r} names nothing the query could use")
    return Answer("free", adds=[rest])


__all__ = [
    "FUNCTION_WORDS",
    "Answer",
    "Phrase",
    "asked_phrase",
    "caption_phrases",
    "content_words",
    "read_answer",
    "tokens",
    "with_article",
]
