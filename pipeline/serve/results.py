"""A pipeline's :class:`..store.search.SearchResult` as the API's JSON: hits with links to their
pictures by item id, the trace, the timings; and how hits moved between two rounds."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import Response

from ..store.search import Hit, SearchResult

UPLOAD_LABEL = "(uploaded image)"
"""What a result says instead of the server-side path of an uploaded query image."""


def hit_json(index: str, hit: Hit) -> dict[str, Any]:
    base = f"/api/indexes/{index}/items/{hit.id}"
    return {
        "rank": hit.rank,
        "id": hit.id,
        "key": hit.key,
        "score": hit.score,
        "scores": hit.scores,
        "caption": hit.caption,
        "text": hit.text,
        "thumbnail": f"{base}/thumbnail",
        "image": f"{base}/image",
    }


def result_json(index: str, result: SearchResult, round_: int) -> dict[str, Any]:
    trace = result.trace
    if trace is not None and trace.get("image") is not None:
        trace = {**trace, "image": UPLOAD_LABEL}
    return {
        "query": result.query,
        "hits": [hit_json(index, h) for h in result.hits],
        "trace": trace,
        "timings": result.timings,
        "truncated": result.truncated,
        "round": round_,
    }


def moved(before: SearchResult, after: SearchResult) -> list[dict[str, int | None]]:
    """Every item of either round's hits with its rank before and after (None: not among them),
    in the new order, then the items that left."""
    was = {h.id: h.rank for h in before.hits}
    now = {h.id: h.rank for h in after.hits}
    order = [h.id for h in after.hits] + [h.id for h in before.hits if h.id not in now]
    return [{"id": i, "before": was.get(i), "after": now.get(i)} for i in order]


class RenderedJSON(Response):
    """A JSON body rendered beforehand (on a worker, not in the event loop)."""

    media_type = "application/json"


def render(payload: Any) -> bytes:
    """``payload`` as compact JSON (what :class:`RenderedJSON` sends)."""
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
