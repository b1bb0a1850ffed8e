"""Generation held to a list of words: a logits processor over the tokens that spell them.

A language model asked to describe an image in "the words this collection knows" may still write a
word the collection never uses ("box" where its captions say "square"). :class:`WordConstraint`
makes that impossible at decoding time: at every step, a token is allowed only when the text it
extends stays on the way to a known word (a prefix of one, letter-wise, case-insensitively), or
starts a new one once the current word is complete. Tokens without letters (spaces, punctuation,
digits) and the end of the answer are allowed between words. Tokens that mix letters and other
characters (``"ing,"``) are not, so every word the model writes is whole and known.

It works with any tokenizer that decodes single tokens to text (byte-level BPE, sentencepiece), in
greedy, sampled and beam-search decoding: transformers calls it with each beam's row.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

_LETTERS = re.compile(r"[^\W\d_]+", re.UNICODE)
_TRAILING_WORD = re.compile(r"[^\W\d_]+$", re.UNICODE)


@dataclass
class _TokenTable:
    """A tokenizer's tokens sorted by what they can do to a word (computed once per tokenizer)."""

    starts: dict[str, list[int]]
    """Letters -> ids of tokens that start a new word with them (a leading space, then letters)."""
    continues: dict[str, list[int]]
    """Letters -> ids of tokens that are only those letters (they continue the current word)."""
    between: list[int]
    """Tokens without a letter (spaces, punctuation, digits): allowed between words."""


_TABLES: weakref.WeakKeyDictionary[Any, _TokenTable] = weakref.WeakKeyDictionary()
"""Per tokenizer object, for as long as it lives (an ``id()`` key could be reused by another one)."""


def _table(tokenizer: Any) -> _TokenTable:
    key = tokenizer
    if key not in _TABLES:
        starts: dict[str, list[int]] = {}
        continues: dict[str, list[int]] = {}
        between: list[int] = []
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        for token_id in range(len(tokenizer)):
            if token_id in special:
                continue
            text = tokenizer.decode([token_id])
            if not text:
                continue
            if not _LETTERS.search(text):
                between.append(token_id)
            elif _LETTERS.fullmatch(text):
                continues.setdefault(text.lower(), []).append(token_id)
            elif text[0].isspace() and _LETTERS.fullmatch(text.lstrip()):
                starts.setdefault(text.lstrip().lower(), []).append(token_id)
        _TABLES[key] = _TokenTable(starts, continues, between)
    return _TABLES[key]


class WordConstraint:
    """A transformers ``LogitsProcessor``: only tokens on the way to a word of ``words``.

    ``prompt_length``: where the generated part of each row starts (the padded prompt's length).
    ``end_ids``: the tokens that end an answer (allowed between words).
    """

    def __init__(self, tokenizer: Any, words: Iterable[str], prompt_length: int, end_ids: Iterable[int]) -> None:
        self.tokenizer = tokenizer
        self.words = sorted({w.lower() for w in words if w and _LETTERS.fullmatch(w)})
        if not self.words:
            raise ValueError("a word constraint needs at least one word made of letters")
        self.prefixes = {w[:i] for w in self.words for i in range(1, len(w) + 1)}
        self.complete = set(self.words)
        self.prompt_length = prompt_length
        table = _table(tokenizer)
        self.table = table
        start_ids = [i for letters, ids in table.starts.items() if letters in self.prefixes for i in ids]
        first_ids = [i for letters, ids in table.continues.items() if letters in self.prefixes for i in ids]
        after_word = {*table.between, *start_ids, *end_ids}
        self.after_word = torch.tensor(sorted(after_word), dtype=torch.long)
        """Allowed once a word is complete: a space-led word start, a separator, the end."""
        self.fresh = torch.tensor(sorted(after_word | set(first_ids)), dtype=torch.long)
        """Allowed at the start or after a separator: also a word start without a space."""

    def _inside(self, partial: str) -> list[int]:
        """Tokens allowed after the letters ``partial`` of an unfinished word."""
        allowed: set[int] = set()
        for word in self.words:
            if word.startswith(partial) and len(word) > len(partial):
                rest = word[len(partial) :]
                for j in range(1, len(rest) + 1):
                    allowed.update(self.table.continues.get(rest[:j], ()))
        return sorted(allowed)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        mask = torch.full_like(scores, float("-inf"))
        for row in range(input_ids.shape[0]):
            text = self.tokenizer.decode(input_ids[row, self.prompt_length :], skip_special_tokens=True)
            found = _TRAILING_WORD.search(text)
            partial = found.group(0).lower() if found else ""
            if not partial:
                mask[row, self.fresh] = 0.0
                continue
            ids = self._inside(partial)
            if ids:
                mask[row, torch.tensor(ids, dtype=torch.long)] = 0.0
            if partial in self.complete or not ids:  # (not ids: a word off the list cannot grow; let it end)
                mask[row, self.after_word] = 0.0
        return scores + mask


__all__ = ["WordConstraint"]
