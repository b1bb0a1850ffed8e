"""Decoding latency of an identifier model (constrained beam search, one query at a time) beside the
dual encoder's query encoding and FAISS search, on the same index and queries."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class GenidBench:
    index: str
    model: str
    scheme: str
    items: int
    queries: int
    beams: int
    clip_encode_p50_ms: float
    faiss_search_p50_ms: float
    faiss_search_p95_ms: float
    decode_p50_ms: float
    decode_p95_ms: float
    decode_over_search: float
    """How many times longer one decode takes than one FAISS search (p50s, measured in this run)."""
    machine: dict[str, Any] = field(default_factory=dict)


def bench_genid(index: Path, model_dir: Path, texts: list[str], *, beams: int = 10, k: int = 10) -> GenidBench:
    """Per query: encode (CLIP), FAISS search of the top ``k``, and the identifier model's decode
    with ``beams`` beams; p50/p95 over ``texts`` (one warm-up query first)."""
    from ..genid.model import IdentifierModel, check_index
    from ..reports import machine_info
    from ..stages.presets import open_searcher

    searcher = open_searcher(index)  # the index's own encoder and search settings
    store = searcher.store
    model = IdentifierModel.load(model_dir)
    check_index(model.info, store)
    encode, search, decode = [], [], []
    for i, text in enumerate([texts[0], *texts]):
        t0 = time.perf_counter()
        vec = searcher.encode_query_text(text)[0]
        t1 = time.perf_counter()
        searcher.search_vectors(vec, k, {})
        t2 = time.perf_counter()
        model.retrieve([text], k=k, beams=beams)
        t3 = time.perf_counter()
        if i:  # the first is a warm-up
            encode.append(t1 - t0), search.append(t2 - t1), decode.append(t3 - t2)

    def p(values: list[float], q: float) -> float:
        return 1000 * float(np.percentile(values, q))

    out = GenidBench(str(index), str(model_dir), model.info.scheme, len(store), len(texts), beams,
                     p(encode, 50), p(search, 50), p(search, 95), p(decode, 50), p(decode, 95),
                     p(decode, 50) / max(p(search, 50), 1e-6), machine_info())  # fmt: skip
    store.close()
    return out


__all__ = ["GenidBench", "bench_genid"]
