"""Vision features of stored items for a matcher: from the index's cache, or computed and cached.

Reranking a query's candidates needs each candidate's vision features. Taking them from
:class:`~.cache.ModelCache` saves decoding and re-encoding up to k images per query; missing ones
are computed (decode, preprocess, the matcher's vision tower) and written back. An image that no
longer decodes is reported, never fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from .cache import ModelCache
from .images import ImageDecodeError, load_image

if TYPE_CHECKING:
    from ...adapters.base import ImageTextMatcher
    from ..config import IndexConfig
    from .index_store import IndexStore

logger = logging.getLogger(__name__)


@dataclass
class FeatureBatch:
    """Features for some items, and what happened getting them."""

    ids: list[int]
    """Items with features, in the order asked (failed ones left out)."""
    features: torch.Tensor
    """(len(ids), *feature_shape) float32."""
    cached: int = 0
    computed: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    """(item id, reason) for images that could not be read."""


class FeatureSource:
    """Features of stored items for one matcher, through an optional cache."""

    def __init__(
        self,
        matcher: ImageTextMatcher,
        cache: ModelCache | None,
        *,
        max_pixels: int = 89_478_485,
        batch_size: int = 64,
    ) -> None:
        self.matcher = matcher
        self.cache = cache
        self.max_pixels = max_pixels
        self.batch_size = batch_size

    def get(self, items: Sequence[tuple[int, str]]) -> FeatureBatch:
        """Features of ``items`` ((id, image path) pairs)."""
        empty = torch.zeros(0, *tuple(self.matcher.feature_shape))
        return through_cache(self.cache, self.matcher.fingerprint, items, self._compute, empty, "feature")

    def _compute(self, items: Sequence[tuple[int, str]]) -> tuple[dict[int, np.ndarray], list[tuple[int, str]]]:
        out: dict[int, np.ndarray] = {}
        failed: list[tuple[int, str]] = []
        for ids, pixels in pixel_batches(items, self.matcher.image_transform, self.max_pixels, self.batch_size, failed):
            feats = self.matcher.image_features(pixels)  # (b, *feature_shape)
            out.update({i: f.numpy().astype(np.float16) for i, f in zip(ids, feats, strict=True)})
        return out, failed


class EmbedSource:
    """ITC query embeddings of stored items, (Q, D) each: cached, else from the vision features.

    They are small (BLIP-2: 32 x 256 in float16, 16 KB; its vision features: ~0.7 MB), so they stay
    cached even where the vision features do not; with them a query's ITC over k candidates is one
    matrix product, and only the few candidates ITM rescores need their vision features.
    """

    SUFFIX = ":itc"

    def __init__(self, vision: FeatureSource, cache: ModelCache | None) -> None:
        self.vision = vision
        self.matcher = vision.matcher
        self.cache = cache

    @property
    def fingerprint(self) -> str:
        return self.matcher.fingerprint + self.SUFFIX

    def get(self, items: Sequence[tuple[int, str]]) -> FeatureBatch:
        """Embeddings of ``items`` ((id, image path) pairs); ``features`` is (n, Q, D)."""
        return through_cache(self.cache, self.fingerprint, items, self._compute, torch.zeros(0, 1, 1), "embedding")

    def _compute(self, items: Sequence[tuple[int, str]]) -> tuple[dict[int, np.ndarray], list[tuple[int, str]]]:
        if not items:
            return {}, []
        batch = self.vision.get(items)
        embeds = self.matcher.image_embeds(batch.features)
        return {i: e.numpy().astype(np.float16) for i, e in zip(batch.ids, embeds, strict=True)}, batch.failed


def through_cache(
    cache: ModelCache | None,
    fingerprint: str,
    items: Sequence[tuple[int, str]],
    compute: Callable[[Sequence[tuple[int, str]]], tuple[dict[int, np.ndarray], list[tuple[int, str]]]],
    empty: torch.Tensor,
    what: str,
) -> FeatureBatch:
    """Per-item arrays of ``items`` under ``fingerprint``: those ``cache`` holds, the rest from
    ``compute`` (id -> float16 array, failures) and written back; stacked in the order asked."""
    found = cache.get_features([i for i, _ in items], fingerprint) if cache is not None else {}
    computed, failed = compute([(i, p) for i, p in items if i not in found])
    if computed and cache is not None:
        try:
            cache.put_features(computed, fingerprint)
        except Exception as exc:  # a read-only or busy folder must not fail the query
            logger.warning("could not write the %s cache %s: %s", what, cache.path, exc)
    ids = [i for i, _ in items if i in found or i in computed]
    arrays = [found[i] if i in found else computed[i] for i in ids]
    stacked = torch.from_numpy(np.stack(arrays).astype(np.float32)) if arrays else empty
    return FeatureBatch(ids, stacked, cached=len(found), computed=len(computed), failed=failed)


def pixel_batches(
    items: Sequence[tuple[int, str]],
    transform: Callable[[Image.Image], torch.Tensor],
    max_pixels: int,
    batch_size: int,
    failed: list[tuple[int, str]],
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Stored items ((id, image path)) decoded and preprocessed, ``batch_size`` at a time: (ids, (b, 3, H, W)).

    Images that cannot be read are appended to ``failed`` with the reason and left out.
    """
    for start in range(0, len(items), batch_size):
        ids, pixels = [], []
        for item_id, path in items[start : start + batch_size]:
            try:
                pixels.append(transform(load_image(path, max_pixels)))
                ids.append(item_id)
            except (ImageDecodeError, OSError) as exc:
                failed.append((item_id, str(exc)))
        if ids:
            yield ids, torch.stack(pixels)


@dataclass
class PrecomputeReport:
    """What an index-time feature pass did."""

    items: int
    computed: int
    cached: int
    failed: list[tuple[int, str]] = field(default_factory=list)
    bytes_per_item: float = 0.0


def precompute_features(
    store: IndexStore,
    source: FeatureSource | EmbedSource,
    *,
    chunk: int = 256,
    progress: bool | None = None,
    config: IndexConfig | None = None,
) -> PrecomputeReport:
    """Fill the cache of ``source`` (vision features, or ITC embeddings) for every item of ``store``
    (items already cached are skipped). With ``config.engine == "ray"`` the missing ones are computed
    on a Ray actor pool and written here."""
    from ..progress import progress_bar

    items = [(row.id, row.path) for row in store.iter_items()]
    report = PrecomputeReport(len(items), 0, 0)
    what = "ITC embeddings" if isinstance(source, EmbedSource) else "vision features"
    fingerprint = source.fingerprint if isinstance(source, EmbedSource) else source.matcher.fingerprint
    with progress_bar(f"{what} ({source.matcher.name})", len(items), "img", progress) as bar:
        if config is not None and config.engine == "ray" and source.cache is not None:
            _precompute_on_ray(items, source, fingerprint, config, report, bar)
        else:
            for start in range(0, len(items), chunk):
                batch = source.get(items[start : start + chunk])
                report.computed += batch.computed
                report.cached += batch.cached
                report.failed += batch.failed
                bar.advance(min(chunk, len(items) - start))
    if source.cache is not None:
        report.bytes_per_item = source.cache.feature_stats(fingerprint).bytes_per_item
    return report


def _precompute_on_ray(
    items: list[tuple[int, str]],
    source: FeatureSource | EmbedSource,
    fingerprint: str,
    config: IndexConfig,
    report: PrecomputeReport,
    bar: Any,
) -> None:
    """The items ``source``'s cache lacks, computed on Ray actors (each holding a cache-less copy of the
    source) and written to the cache batch by batch, so an interrupted pass keeps what it finished."""
    from .ray_engine import ray_compute

    cache = source.cache
    assert cache is not None
    have = cache.has_features([i for i, _ in items], fingerprint)
    missing = [(i, p) for i, p in items if i not in have]
    report.cached = len(items) - len(missing)
    bar.advance(report.cached)
    vision = source.vision if isinstance(source, EmbedSource) else source
    bare = FeatureSource(vision.matcher, None, max_pixels=vision.max_pixels, batch_size=vision.batch_size)
    owner = EmbedSource(bare, None) if isinstance(source, EmbedSource) else bare
    for made, failed in ray_compute(owner, "_compute", missing, config):
        cache.put_features(made, fingerprint)
        report.computed += len(made)
        report.failed += failed
        bar.advance(len(made) + len(failed))
