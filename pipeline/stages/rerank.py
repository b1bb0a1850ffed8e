"""Rerank: a cross-attention matcher (BLIP-2 Q-Former) rescores the top candidates.

As in LAVIS's BLIP-2 retrieval: the candidates come from a contrastive preselection; the matcher's
ITC scores all ``k`` of them (one matrix product over cached query embeddings), its ITM head scores
the ``itm_k`` best of those pairs, and the final score is ITM + ITC (weights configurable, and the
preselect score can be fused in). Candidates ITM scored come first, then the rest of the ``k`` by
their ITC (+ preselect) score. Each candidate's ``itm``, ``itc`` and ``rerank`` scores go into the
state, the hits and the trace. Candidates past ``k``, and images that no longer decode, keep their
order after the reranked ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ...adapters.base import itc_scores
from ...adapters.entries import ConfigError
from .state import QueryState

if TYPE_CHECKING:
    from ..store.features import EmbedSource, FeatureBatch, FeatureSource
    from .base import StageContext


@dataclass
class RerankConfig:
    """Settings of the rerank stage."""

    model: str = "scene-reranker"
    """Model entry of the matcher (a packaged name, a YAML path)."""
    k: int = 128
    """Candidates rescored by ITC, from the top of the current list."""
    itm_k: int | None = 16
    """Of those, how many (the best by ITC + preselect) ITM rescores; None: all ``k`` (slower)."""
    itm_weight: float = 1.0
    itc_weight: float = 1.0
    preselect_weight: float = 0.0
    """Weight of the preselect (CLIP) score fused into the final score."""
    cache: bool = True
    """Keep the candidates' vision features in the index's cache (off: recompute them for the
    ``itm_k`` candidates ITM scores; for big vision towers, whose features take ~0.7 MB per image)."""
    embed_cache: bool = True
    """Keep the candidates' ITC query embeddings in the index's cache (small: 4-16 KB per image)."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"rerank: field 'k' must be >= 1, got {self.k}")
        if self.itm_k is not None and self.itm_k < 1:
            raise ConfigError(f"rerank: field 'itm_k' must be >= 1 or null (all k), got {self.itm_k}")
        if not self.model:
            raise ConfigError("rerank: field 'model' must name a matcher model entry")


class Rerank:
    """Rescores the top-k candidates against the current query text with an ``ImageTextMatcher``."""

    name = "rerank"

    def __init__(
        self, features: FeatureSource, config: RerankConfig | None = None, embeds: EmbedSource | None = None
    ) -> None:
        from ..store.features import EmbedSource

        self.features = features
        self.matcher = features.matcher
        self.config = config or RerankConfig()
        self.embeds = embeds or EmbedSource(features, features.cache)

    @classmethod
    def from_context(cls, config: RerankConfig, ctx: StageContext) -> Rerank:
        if ctx.store.manifest.modality != "image":
            raise ConfigError("rerank: the index holds texts, not images; rerank needs an image index")
        matcher = ctx.model(config.model, "matcher")
        features, embeds = matcher_sources(ctx, matcher, cache=config.cache, embed_cache=config.embed_cache)
        return cls(features, config, embeds)

    def run(self, state: QueryState) -> QueryState:
        if state.text is None:
            state.notes["skipped"] = "no query text to match (an image query): order kept"
            return state
        cfg, text = self.config, state.text
        head, tail = state.candidates[: cfg.k], state.candidates[cfg.k :]
        timings: dict[str, float] = {}
        start = time.perf_counter()
        embeds = self.embeds.get([(c.id, c.path) for c in head])
        timings["embeds_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        itc = itc_scores(embeds.features, self.matcher.text_embeds([text])[0])
        timings["itc_seconds"] = time.perf_counter() - start
        by_id = {c.id: c for c in head}
        scored = [by_id[i] for i in embeds.ids]
        vision: list[FeatureBatch] = []

        def itm(positions: np.ndarray) -> np.ndarray:
            items = [(scored[p].id, scored[p].path) for p in positions]
            start = time.perf_counter()
            batch = self.features.get(items)
            timings["features_seconds"] = time.perf_counter() - start
            start = time.perf_counter()
            found = dict(zip(batch.ids, self.matcher.itm(batch.features, text), strict=True))
            timings["itm_seconds"] = time.perf_counter() - start
            vision.append(batch)
            return np.array([found.get(i, np.nan) for i, _ in items], dtype=np.float64)

        preselect = np.array([c.scores.get("preselect", 0.0) for c in scored])
        order, scores = rerank_order(itc, preselect, itm, cfg)
        for j, c in enumerate(scored):
            c.scores.pop("itm", None)  # from an earlier round
            c.scores["itc"] = float(itc[j])
            if not np.isnan(scores["itm"][j]):
                c.scores["itm"] = float(scores["itm"][j])
            c.scores[self.name] = c.score = float(scores["final"][j])
        read = set(embeds.ids)
        state.candidates = [scored[j] for j in order] + [c for c in head if c.id not in read] + tail
        features = vision[0] if vision else None
        state.notes.update(
            k=len(head),
            itm_k=len(features.ids) if features else 0,
            embeds_cached=embeds.cached,
            embeds_computed=embeds.computed,
            features_cached=features.cached if features else 0,
            features_computed=features.computed if features else 0,
            failed=[{"id": i, "reason": r} for i, r in [*embeds.failed, *(features.failed if features else [])]],
            **timings,
        )
        return state


def matcher_sources(
    ctx: StageContext, matcher: Any, *, cache: bool = True, embed_cache: bool = True
) -> tuple[FeatureSource, EmbedSource]:
    """A matcher's vision features and ITC embeddings of the index's items, through the index's
    cache (each cache optional), as the rerank stage and the verifier read them."""
    from ..store.cache import ModelCache
    from ..store.features import EmbedSource, FeatureSource

    store_cache = ModelCache(ctx.store.path)
    batch = getattr(matcher, "batch_size", 64)
    max_pixels = ctx.preset.index.max_image_pixels
    features = FeatureSource(matcher, store_cache if cache else None, max_pixels=max_pixels, batch_size=batch)
    return features, EmbedSource(features, store_cache if embed_cache else None)


def rerank_order(
    itc: np.ndarray, preselect: np.ndarray, itm: Callable[[np.ndarray], np.ndarray], config: RerankConfig
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The rerank rule, shared by the stage and the evaluation.

    ``itc`` and ``preselect`` are (n,) scores of n candidates; ``itm(positions)`` returns the ITM
    probability of those candidates (NaN where it could not score one). The candidates are ordered
    by ITC (+ preselect); ITM scores the first ``itm_k``, which then lead, ordered by their final
    score; the rest follow in ITC (+ preselect) order. Returns the order (positions into the
    inputs) and per-candidate ``itm`` (NaN where not scored) and ``final`` scores.
    """
    partial = config.itc_weight * itc.astype(np.float64) + config.preselect_weight * preselect.astype(np.float64)
    by_partial = np.argsort(-partial, kind="stable")
    n_itm = len(by_partial) if config.itm_k is None else min(config.itm_k, len(by_partial))
    itm_scores = np.full(len(itc), np.nan)
    final = partial.copy()
    if n_itm:
        chosen = by_partial[:n_itm]
        itm_scores[chosen] = itm(chosen)
        matched = chosen[~np.isnan(itm_scores[chosen])]
        final[matched] += config.itm_weight * itm_scores[matched]
        lead = matched[np.argsort(-final[matched], kind="stable")]
    else:
        lead = by_partial[:0]
    rest = by_partial[~np.isin(by_partial, lead)]
    return np.concatenate([lead, rest]), {"itm": itm_scores, "final": final}
