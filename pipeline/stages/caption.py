"""Caption: describe the top candidates in words (what the rewriting agent reads, and what hits show).

Captions are kept in the index's cache (``cache.sqlite``), keyed by item id, the captioner's
fingerprint and the decoding settings, so a candidate is captioned once per model and settings.
Images that no longer decode get no caption and are reported in the trace, never fatal.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ...adapters.entries import ConfigError
from ..store.features import PrecomputeReport, pixel_batches
from .state import QueryState

if TYPE_CHECKING:
    from ...adapters.base import ImageCaptioner
    from ..config import IndexConfig
    from ..store.cache import ModelCache
    from ..store.index_store import IndexStore
    from .base import StageContext


@dataclass
class CaptionDecoding:
    """How captions are decoded (passed to the captioner; part of the cache key)."""

    max_new_tokens: int = 40
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def options(self) -> dict[str, object]:
        """The captioner's keyword options (sampling ones only when sampling)."""
        out: dict[str, object] = {"max_new_tokens": self.max_new_tokens, "num_beams": self.num_beams}
        if self.do_sample:
            out.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, seed=self.seed)
        return out


@dataclass
class CaptionConfig:
    """Settings of the caption stage."""

    model: str = "scene-captioner"
    """Model entry of the captioner (a packaged name, a YAML path)."""
    k: int = 10
    """Candidates captioned, from the top of the current list."""
    cache: bool = True
    """Keep captions in the index's cache."""
    max_new_tokens: int = 40
    num_beams: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"caption: field 'k' must be >= 1, got {self.k}")
        if self.max_new_tokens < 1 or self.num_beams < 1:
            raise ConfigError("caption: fields 'max_new_tokens' and 'num_beams' must be >= 1")

    @property
    def decoding(self) -> CaptionDecoding:
        return CaptionDecoding(
            self.max_new_tokens, self.num_beams, self.do_sample, self.temperature, self.top_p, self.seed
        )


class Captioner:
    """Captions stored items with an ``ImageCaptioner``, through an optional cache."""

    def __init__(
        self,
        model: ImageCaptioner,
        cache: ModelCache | None,
        decoding: CaptionDecoding | None = None,
        *,
        max_pixels: int = 89_478_485,
        batch_size: int = 64,
    ) -> None:
        self.model = model
        self.cache = cache
        self.decoding = decoding or CaptionDecoding()
        self.settings = json.dumps(asdict(self.decoding), sort_keys=True)
        self.max_pixels = max_pixels
        self.batch_size = batch_size

    def captions(self, items: list[tuple[int, str]]) -> tuple[dict[int, str], int, list[tuple[int, str]]]:
        """Captions of ``items`` ((id, image path)): (id -> caption, how many came from the cache, failures)."""
        found = (
            self.cache.get_captions([i for i, _ in items], self.model.fingerprint, self.settings) if self.cache else {}
        )
        missing = [(i, p) for i, p in items if i not in found]
        made, failed = self._caption(missing)
        if made and self.cache is not None:
            self.cache.put_captions(made, self.model.fingerprint, self.settings)
        return {**found, **made}, len(found), failed

    def precompute(
        self,
        store: IndexStore,
        *,
        chunk: int = 256,
        progress: bool | None = None,
        config: IndexConfig | None = None,
    ) -> PrecomputeReport:
        """Caption every item of ``store`` into the cache now (items already cached are skipped); with
        ``config.engine == "ray"``, on a Ray actor pool."""
        from ..progress import progress_bar

        items = [(row.id, row.path) for row in store.iter_items()]
        report = PrecomputeReport(len(items), 0, 0)
        with progress_bar(f"captions ({self.model.name})", len(items), "img", progress) as bar:
            if config is not None and config.engine == "ray" and self.cache is not None:
                self._precompute_on_ray(items, config, report, bar)
                return report
            for start in range(0, len(items), chunk):
                made, cached, failed = self.captions(items[start : start + chunk])
                report.computed += len(made) - cached
                report.cached += cached
                report.failed += failed
                bar.advance(min(chunk, len(items) - start))
        return report

    def _precompute_on_ray(
        self, items: list[tuple[int, str]], config: IndexConfig, report: PrecomputeReport, bar: Any
    ) -> None:
        """The captions the cache lacks, made by Ray actors (each with a cache-less copy of this captioner)
        and written to the cache batch by batch."""
        from ..store.ray_engine import ray_compute

        assert self.cache is not None
        have = self.cache.get_captions([i for i, _ in items], self.model.fingerprint, self.settings)
        missing = [(i, p) for i, p in items if i not in have]
        report.cached = len(have)
        bar.advance(len(have))
        bare = copy.copy(self)
        bare.cache = None
        for made, failed in ray_compute(bare, "_caption", missing, config):
            self.cache.put_captions(made, self.model.fingerprint, self.settings)
            report.computed += len(made)
            report.failed += failed
            bar.advance(len(made) + len(failed))

    def _caption(self, items: list[tuple[int, str]]) -> tuple[dict[int, str], list[tuple[int, str]]]:
        out: dict[int, str] = {}
        failed: list[tuple[int, str]] = []
        batches = pixel_batches(items, self.model.image_transform, self.max_pixels, self.batch_size, failed)
        for ids, pixels in batches:
            out.update(zip(ids, self.model.caption(pixels, **self.decoding.options()), strict=True))
        return out, failed


class Caption:
    """Puts a caption on each of the top-k candidates."""

    name = "caption"

    def __init__(self, captioner: Captioner, config: CaptionConfig | None = None) -> None:
        self.captioner = captioner
        self.config = config or CaptionConfig()

    @classmethod
    def from_context(cls, config: CaptionConfig, ctx: StageContext) -> Caption:
        from ..store.cache import ModelCache

        if ctx.store.manifest.modality != "image":
            raise ConfigError("caption: the index holds texts, not images; captions need an image index")
        model = ctx.model(config.model, "captioner")
        cache = ModelCache(ctx.store.path) if config.cache else None
        batch = getattr(model, "batch_size", 64)
        captioner = Captioner(
            model, cache, config.decoding, max_pixels=ctx.preset.index.max_image_pixels, batch_size=batch
        )
        return cls(captioner, config)

    def run(self, state: QueryState) -> QueryState:
        head = state.candidates[: self.config.k]
        start = time.perf_counter()
        captions, cached, failed = self.captioner.captions([(c.id, c.path) for c in head])
        for c in head:
            c.caption = captions.get(c.id)
        state.notes.update(
            k=len(head),
            captions_cached=cached,
            captions_computed=len(captions) - cached,
            failed=[{"id": i, "reason": r} for i, r in failed],
            captions={str(c.id): c.caption for c in head},
            seconds=time.perf_counter() - start,
        )
        return state
