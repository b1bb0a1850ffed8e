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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...adapters.base import itc_scores
from ...adapters.entries import ConfigError
from .state import QueryState

if TYPE_CHECKING:
    from ..store.features import EmbedSource, FeatureSource
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

    def __init__(self, features: FeatureSource, config: RerankConfig | None = None, embeds: EmbedSource | None = None):
        from ..store.features import EmbedSource

        self.features = features
        self.matcher = features.matcher
        self.config = config or RerankConfig()
        self.embeds = embeds or EmbedSource(features, features.cache)

    @classmethod
    def from_context(cls, config: RerankConfig, ctx: StageContext) -> Rerank:
        from ..store.cache import ModelCache
        from ..store.features import EmbedSource, FeatureSource

        if ctx.store.manifest.modality != "image":
            raise ConfigError("rerank: the index holds texts, not images; rerank needs an image index")
        matcher = ctx.model(config.model, "matcher")
        cache = ModelCache(ctx.store.path)
        batch = getattr(matcher, "batch_size", 64)
        max_pixels = ctx.preset.index.max_image_pixels
        features = FeatureSource(matcher, cache if config.cache else None, max_pixels=max_pixels, batch_size=batch)
        return cls(features, config, EmbedSource(features, cache if config.embed_cache else None))

    def run(self, state: QueryState) -> QueryState:
        if state.text is None:
            state.notes["skipped"] = "no query text to match (an image query): order kept"
            return state
        cfg = self.config
        head, tail = state.candidates[: cfg.k], state.candidates[cfg.k :]
        timings: dict[str, float] = {}
        start = time.perf_counter()
        embeds = self.embeds.get([(c.id, c.path) for c in head])
        timings["embeds_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        itc = itc_scores(embeds.features, self.matcher.text_embeds([state.text])[0])
        timings["itc_seconds"] = time.perf_counter() - start
        by_id = {c.id: c for c in head}
        for item_id, score in zip(embeds.ids, itc, strict=True):
            c = by_id[item_id]
            c.scores.pop("itm", None)  # from an earlier round
            c.scores["itc"] = float(score)
            c.scores[self.name] = cfg.itc_weight * float(score) + cfg.preselect_weight * c.scores.get("preselect", 0.0)
        ranked = sorted((by_id[i] for i in embeds.ids), key=lambda c: c.scores[self.name], reverse=True)
        n_itm = len(ranked) if cfg.itm_k is None else min(cfg.itm_k, len(ranked))
        start = time.perf_counter()
        vision = self.features.get([(c.id, c.path) for c in ranked[:n_itm]])
        timings["features_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        itm = self.matcher.itm(vision.features, state.text)
        timings["itm_seconds"] = time.perf_counter() - start
        for item_id, score in zip(vision.ids, itm, strict=True):
            c = by_id[item_id]
            c.scores["itm"] = float(score)
            c.scores[self.name] += cfg.itm_weight * float(score)
        for c in ranked:
            c.score = c.scores[self.name]
        scored = set(vision.ids)
        matched = sorted((by_id[i] for i in vision.ids), key=lambda c: c.score, reverse=True)
        rest = [c for c in ranked if c.id not in scored]  # already in ITC (+ preselect) order
        read = set(embeds.ids)
        unread = [c for c in head if c.id not in read]
        state.candidates = matched + rest + unread + tail
        state.notes.update(
            k=len(head),
            itm_k=len(vision.ids),
            embeds_cached=embeds.cached,
            embeds_computed=embeds.computed,
            features_cached=vision.cached,
            features_computed=vision.computed,
            failed=[{"id": i, "reason": r} for i, r in [*embeds.failed, *vision.failed]],
            **timings,
        )
        return state
