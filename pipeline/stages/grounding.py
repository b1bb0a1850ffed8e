"""The words a collection is described with, and holding a language model's query to them.

An index knows its collection's words: the items' own texts (manifest captions, or the texts of a
text index), every caption cached for it (``--with caption`` or the caption stage), and nothing
else. A query stage that writes for the encoder may then ground what the model writes (its
``ground`` setting):

* ``constrain``: the model may only write those words (plus :data:`FUNCTION_WORDS` and anything
  without letters), a token-level constraint during decoding
  (:class:`...adapters.word_constraint.WordConstraint`); a model without local decoding (a
  provider's) is asked as usual and its answer repaired instead;
* ``repair``: after the model wrote, every word off the list is replaced by the known word nearest
  to it in the encoder's text space (the trace lists each change);
* ``none``: as the model wrote.

Nothing here knows what a collection holds: the words come from its texts.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from ...adapters.base import ImageTextEncoder
    from ..store.index_store import IndexStore

logger = logging.getLogger(__name__)

Ground = Literal["none", "constrain", "repair"]
GROUND_MODES: tuple[str, ...] = ("none", "constrain", "repair")

FUNCTION_WORDS = frozenset(
    """a an the this that these those some any no not and or but with without of in on at to from by for
    into onto over under above below behind beside near next between among around across along inside
    outside its it is are was be there here one two three four five six seven eight nine ten
    something anything thing things object objects item items one ones kind sort""".split()
)
"""English function words, and the vague nouns people use for what they cannot name ("something",
"an object"), which a grounded query may always use: they describe nothing by themselves, and
without them a constrained model asked for "a small object" must invent which one."""

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
MAX_ITEMS = 200_000
"""Texts read per source when a collection's words are gathered (a sample of a bigger collection)."""


def words_of(texts: Iterable[str | None], min_count: int = 1) -> frozenset[str]:
    """The lower-cased words of ``texts`` that occur at least ``min_count`` times."""
    counts: Counter[str] = Counter()
    for text in texts:
        if text:
            counts.update(w.lower() for w in _WORD.findall(text))
    return frozenset(w for w, c in counts.items() if c >= min_count)


def collection_texts(store: IndexStore, max_items: int = MAX_ITEMS) -> list[str]:
    """The texts an index holds about its items: their own texts, manifest captions in their
    metadata (``caption`` / ``captions``), and the captions cached for them."""
    from ..store.cache import ModelCache

    texts: list[str] = []
    for n, item in enumerate(store.iter_items()):
        if n >= max_items:
            break
        texts.append(item.text or "")
        for key in ("caption", "captions"):
            value = item.metadata.get(key)
            if isinstance(value, str):
                texts.append(value)
            elif isinstance(value, list):
                texts.extend(v for v in value if isinstance(v, str))
    cache = ModelCache(store.path)
    try:
        texts.extend(cache.caption_texts(max_items))
    finally:
        cache.close()
    return [t for t in texts if t]


@dataclass
class Vocabulary:
    """A collection's words, and (given its encoder) where each sits in the encoder's text space."""

    words: frozenset[str]
    encoder: ImageTextEncoder | None = None
    _vectors: np.ndarray | None = field(default=None, repr=False)
    _order: list[str] = field(default_factory=list, repr=False)

    @classmethod
    def of_index(cls, store: IndexStore, encoder: ImageTextEncoder | None = None) -> Vocabulary:
        words = words_of(collection_texts(store))
        if not words:
            logger.warning("index %s holds no texts: a grounded query stage has no words to hold to", store.path)
        return cls(words, encoder)

    @property
    def allowed(self) -> list[str]:
        """The collection's words and the function words, sorted (what a constrained model may write)."""
        return sorted(self.words | FUNCTION_WORDS)

    def unknown(self, text: str) -> list[str]:
        """The words of ``text`` off the list, in order."""
        known = self.words | FUNCTION_WORDS
        return [w for w in _WORD.findall(text) if w.lower() not in known]

    def nearest(self, word: str) -> str:
        """The collection's word nearest ``word`` in the encoder's text space."""
        if self.encoder is None:
            raise ValueError("repairing words needs the collection's encoder")
        if self._vectors is None:
            self._order = sorted(self.words)
            self._vectors = np.asarray(self.encoder.encode_texts(self._order), dtype=np.float32)
        vec = np.asarray(self.encoder.encode_texts([word.lower()]), dtype=np.float32)[0]
        return self._order[int(np.argmax(self._vectors @ vec))]

    def repair(self, text: str) -> tuple[str, list[dict[str, str]]]:
        """``text`` with each word off the list replaced by its nearest known word, and the changes."""
        if not self.words:
            return text, []
        changes: list[dict[str, str]] = []

        def swap(match: re.Match[str]) -> str:
            word = match.group(0)
            if word.lower() in self.words or word.lower() in FUNCTION_WORDS:
                return word
            known = self.nearest(word)
            changes.append({"from": word, "to": known})
            return known

        return _WORD.sub(swap, text), changes


def stage_vocabulary(ctx: Any) -> Vocabulary:
    """The vocabulary of a pipeline's index, gathered once per pipeline (shared by its stages)."""
    key = "__vocabulary__"
    if key not in ctx.models:
        ctx.models[key] = Vocabulary.of_index(ctx.store, ctx.encoder)
    return ctx.models[key]


__all__ = [
    "FUNCTION_WORDS",
    "GROUND_MODES",
    "Ground",
    "Vocabulary",
    "collection_texts",
    "stage_vocabulary",
    "words_of",
]
