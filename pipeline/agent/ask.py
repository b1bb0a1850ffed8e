"""One language-model call that yields a query: render the prompt, invoke, check the answer.

Everything the call did goes into one record for the trace: the prompt's name and version, the
rendered messages, the raw answer, the accepted query or why the answer was refused (the caller
then keeps the previous query), tokens and seconds. A model that raises is a refused answer too:
one bad call never ends a search.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .parse import parse_query
from .prompts import Prompt

logger = logging.getLogger(__name__)


def ask_for_query(llm: Any, prompt: Prompt, values: dict[str, str], *, max_chars: int = 200) -> dict[str, Any]:
    """Ask ``llm`` (a langchain-core chat model) with ``prompt`` filled with ``values`` (already quoted).

    Returns the trace record; ``record["query"]`` is the accepted query or None.
    """
    messages = prompt.format(**values)
    record: dict[str, Any] = {
        "prompt": prompt.name,
        "prompt_version": prompt.version,
        "messages": [{"role": m.type, "content": str(m.content)} for m in messages],
    }
    start = time.perf_counter()
    try:
        reply = llm.invoke(messages)
    except Exception as exc:  # a provider's error, a time-out: refused, and the search goes on
        logger.warning("the language model failed (%s): the previous query stays", exc)
        record.update(raw=None, query=None, problem=f"the model failed: {exc}", seconds=time.perf_counter() - start)
        return record
    raw = reply.content if isinstance(reply.content, str) else str(reply.content)
    parsed = parse_query(raw, max_chars=max_chars)
    record.update(raw=raw, query=parsed.text, problem=parsed.problem, seconds=time.perf_counter() - start)
    usage = getattr(reply, "usage_metadata", None)
    if usage:
        record["tokens"] = dict(usage)
    return record


__all__ = ["ask_for_query"]
