"""Checking what a language model answered before it becomes a query.

A model's answer is untrusted text: it may be empty, run on, repeat the prompt, keep template
leftovers or chat markup, or wrap the query in quotes or a label. :func:`parse_query` takes the
first non-empty line, strips a label (``Query:``) and surrounding quotes, and accepts it only when it
is plain, bounded text; otherwise it says why, and the caller keeps the previous query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LABEL = re.compile(r"^\s*(?:new\s+)?(?:query|description|answer|rewritten query)\s*[:\-]\s*", re.IGNORECASE)
_MARKUP = re.compile(r"<\|[^|]*\|>|</?s>|\[/?INST\]|\{[a-z_]+\}|\b(?:system|assistant|user)\s*:", re.IGNORECASE)
_QUOTES = "\"'`“”‘’"


@dataclass(frozen=True)
class ParsedQuery:
    text: str | None
    """The accepted query, or None."""
    problem: str | None = None
    """Why the answer was refused (None when accepted)."""


def parse_query(raw: str, *, max_chars: int = 200, min_chars: int = 2) -> ParsedQuery:
    """The query in a model's answer ``raw``, or the reason it has none."""
    lines = [line.strip() for line in raw.strip().splitlines() if line.strip()]
    if not lines:
        return ParsedQuery(None, "empty answer")
    text = _LABEL.sub("", lines[0]).strip().strip(_QUOTES).strip()
    if _MARKUP.search(text):
        return ParsedQuery(None, "template or chat markup left in the answer")
    if len(text) < min_chars:
        return ParsedQuery(None, "answer too short")
    if len(text) > max_chars:
        return ParsedQuery(None, f"answer longer than {max_chars} characters")
    if any(not ch.isprintable() for ch in text):
        return ParsedQuery(None, "control characters in the answer")
    return ParsedQuery(text)


__all__ = ["ParsedQuery", "parse_query"]
