"""Rerank: a cross-attention matcher (BLIP-2 Q-Former) rescores the top candidates.

As in LAVIS's BLIP-2 retrieval: the candidates come from a contrastive preselection, the ITM head
scores each (image, query) pair, and the final score is ITM + ITC (weights configurable, and the
preselect score can be fused in). Each candidate's ``itm``, ``itc`` and ``rerank`` scores go into
the state, the hits and the trace. Candidates past ``k``, and images that no longer decode, keep
their order after the reranked ones.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...adapters.entries import ConfigError
from .state import QueryState

if TYPE_CHECKING:
    from ..store.features import FeatureSource
    from .base import StageContext


@dataclass
class RerankConfig:
    """Settings of the rerank stage."""

    model: str = "scene-reranker"
    """Model entry of the matcher (a packaged name, a YAML path)."""
    k: int = 128
    """Candidates rescored, from the top of the current list."""
    itm_weight: float = 1.0
    itc_weight: float = 1.0
    preselect_weight: float = 0.0
    """Weight of the preselect (CLIP) score fused into the final score."""
    cache: bool = True
    """Keep the candidates' vision features in the index's cache (off: recompute them every query;
    for big vision towers, whose features take ~0.7 MB per image)."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"rerank: field 'k' must be >= 1, got {self.k}")
        if not self.model:
            raise ConfigError("rerank: field 'model' must name a matcher model entry")


class Rerank:
    """Rescores the top-k candidates against the current query text with an ``ImageTextMatcher``."""

    name = "rerank"

    def __init__(self, features: FeatureSource, config: RerankConfig | None = None) -> None:
        self.features = features
        self.matcher = features.matcher
        self.config = config or RerankConfig()

    @classmethod
    def from_context(cls, config: RerankConfig, ctx: StageContext) -> Rerank:
        from ..store.cache import ModelCache
        from ..store.features import FeatureSource

        if ctx.store.manifest.modality != "image":
            raise ConfigError("rerank: the index holds texts, not images; rerank needs an image index")
        matcher = ctx.model(config.model, "matcher")
        cache = ModelCache(ctx.store.path) if config.cache else None
        batch = getattr(matcher, "batch_size", 64)
        return cls(
            FeatureSource(matcher, cache, max_pixels=ctx.preset.index.max_image_pixels, batch_size=batch), config
        )

    def run(self, state: QueryState) -> QueryState:
        if state.text is None:
            state.notes["skipped"] = "no query text to match (an image query): order kept"
            return state
        cfg = self.config
        head, tail = state.candidates[: cfg.k], state.candidates[cfg.k :]
        start = time.perf_counter()
        batch = self.features.get([(c.id, c.path) for c in head])
        feature_seconds = time.perf_counter() - start
        start = time.perf_counter()
        scores = self.matcher.match(batch.features, [state.text])
        match_seconds = time.perf_counter() - start
        by_id = {c.id: c for c in head}
        for item_id, itm, itc in zip(batch.ids, scores.itm, scores.itc, strict=True):
            c = by_id[item_id]
            c.scores["itm"], c.scores["itc"] = float(itm), float(itc)
            final = cfg.itm_weight * float(itm) + cfg.itc_weight * float(itc)
            c.scores[self.name] = final + cfg.preselect_weight * c.scores.get("preselect", 0.0)
            c.score = c.scores[self.name]
        reranked = sorted((by_id[i] for i in batch.ids), key=lambda c: c.score, reverse=True)
        read = set(batch.ids)
        unread = [c for c in head if c.id not in read]
        state.candidates = reranked + unread + tail
        state.notes.update(
            k=len(head),
            features_cached=batch.cached,
            features_computed=batch.computed,
            failed=[{"id": i, "reason": r} for i, r in batch.failed],
            features_seconds=feature_seconds,
            match_seconds=match_seconds,
        )
        return state
