"""One language-model call that yields a query: render the prompt, invoke, check the answer.

Everything the call did goes into one record for the trace: the prompt's name and version, the
rendered messages, the raw answer, the accepted query or why the answer was refused (the caller
then keeps the previous query), tokens and seconds. A model that fails (a time-out, a provider's or
a connection error, running out of memory, a model that cannot load) gives a refused answer too: one
bad call never ends a search. A programming error (:data:`BUGS`: a ``TypeError`` from our own code,
a missing attribute...) is not the model's failure and raises.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from .parse import parse_query
from .prompts import Prompt

logger = logging.getLogger(__name__)

BUGS: tuple[type[BaseException], ...] = (
    TypeError,
    AttributeError,
    NameError,
    LookupError,
    AssertionError,
    NotImplementedError,
    ImportError,
    ArithmeticError,
    RecursionError,
    SyntaxError,
)
"""Exceptions that say the code is wrong, wherever they come from: never turned into a refusal."""


def _model_failure(exc: Exception) -> Exception:
    """``exc`` when it is the model's own failure (to refuse the answer); re-raised when it is a bug."""
    if isinstance(exc, BUGS):
        raise exc
    return exc


def ask_for_query(
    llm: Any,
    prompt: Prompt,
    values: dict[str, str],
    *,
    max_chars: int = 200,
    n: int = 1,
    words: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Ask ``llm`` (a langchain-core chat model) with ``prompt`` filled with ``values`` (already quoted).

    Returns the trace record; ``record["query"]`` is the accepted query or None. With ``n`` > 1 (a
    local model: ``n`` beams), ``record["candidates"]`` holds every answer with its check, best
    first, and ``query`` is the first accepted one. ``words``: a local model writes only these
    words (and whatever has no letters); other models ignore it (``record["constrained"]`` says).
    """
    return ask_for_queries(llm, prompt, [values], max_chars=max_chars, n=n, words=words)[0]


def ask_for_queries(
    llm: Any,
    prompt: Prompt,
    values: Sequence[dict[str, str]],
    *,
    max_chars: int = 200,
    n: int = 1,
    words: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """:func:`ask_for_query` for several prompts: one batched generate call where the model has
    ``generate_batch`` (a local transformers model), else one call each. A failure refuses the
    answers it covers (the whole batch, or that one call); each record's ``seconds`` is its share."""
    if n > 1 or words:
        if hasattr(llm, "generate_candidates"):
            return _ask_candidates(llm, prompt, values, max_chars=max_chars, n=n, words=words)
        logger.info("the model %s draws one answer without a word constraint", type(llm).__name__)
    conversations = [prompt.format(**v) for v in values]
    records = [
        {
            "prompt": prompt.name,
            "prompt_version": prompt.version,
            "messages": [{"role": m.type, "content": str(m.content)} for m in messages],
        }
        for messages in conversations
    ]
    start = time.perf_counter()
    if hasattr(llm, "generate_batch"):
        try:
            replies: list[Any] = list(llm.generate_batch(conversations))
        except Exception as exc:  # a time-out, an out-of-memory: refused, and the search goes on
            replies = [_model_failure(exc)] * len(conversations)
    else:
        replies = []
        for messages in conversations:
            try:
                reply = llm.invoke(messages)
            except Exception as exc:  # a provider's error, a time-out
                replies.append(_model_failure(exc))
                continue
            text = reply.content if isinstance(reply.content, str) else str(reply.content)
            replies.append((text, getattr(reply, "usage_metadata", None)))
    seconds = (time.perf_counter() - start) / max(1, len(conversations))
    for record, reply in zip(records, replies, strict=True):
        if isinstance(reply, Exception):
            logger.warning("the language model failed (%s): the previous query stays", reply)
            record.update(raw=None, query=None, problem=f"the model failed: {reply}", seconds=seconds)
            continue
        raw, usage = reply
        parsed = parse_query(raw, max_chars=max_chars)
        record.update(raw=raw, query=parsed.text, problem=parsed.problem, seconds=seconds)
        if usage:
            record["tokens"] = dict(usage)
    return records


def _ask_candidates(
    llm: Any, prompt: Prompt, values: Sequence[dict[str, str]], *, max_chars: int, n: int, words: Sequence[str] | None
) -> list[dict[str, Any]]:
    """``n`` answers per prompt from a local model's ``generate_candidates`` (beams, best first)."""
    conversations = [prompt.format(**v) for v in values]
    start = time.perf_counter()
    try:
        replies: list[Any] = list(llm.generate_candidates(conversations, n, words=list(words) if words else None))
    except Exception as exc:  # a time-out, an out-of-memory: refused, and the search goes on
        replies = [_model_failure(exc)] * len(conversations)
    seconds = (time.perf_counter() - start) / max(1, len(conversations))
    records = []
    for messages, reply in zip(conversations, replies, strict=True):
        record: dict[str, Any] = {
            "prompt": prompt.name,
            "prompt_version": prompt.version,
            "messages": [{"role": m.type, "content": str(m.content)} for m in messages],
            "seconds": seconds,
            "constrained": bool(words),
        }
        if isinstance(reply, Exception):
            logger.warning("the language model failed (%s): the previous query stays", reply)
            record.update(raw=None, query=None, problem=f"the model failed: {reply}", candidates=[])
            records.append(record)
            continue
        candidates = []
        for raw, usage in reply:
            parsed = parse_query(raw, max_chars=max_chars)
            candidates.append({"raw": raw, "query": parsed.text, "problem": parsed.problem, "tokens": dict(usage)})
        accepted = next((c for c in candidates if c["query"] is not None), candidates[0])
        record.update(raw=accepted["raw"], query=accepted["query"], problem=accepted["problem"], candidates=candidates)
        n_in = candidates[0]["tokens"].get("input_tokens", 0)
        n_out = sum(c["tokens"].get("output_tokens", 0) for c in candidates)
        record["tokens"] = {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}
        records.append(record)
    return records


__all__ = ["ask_for_queries", "ask_for_query"]
