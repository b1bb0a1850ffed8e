"""GenerativeIds: a language model that memorised the index decodes the ids of the items that match
the query (GRACE), constrained to identifiers of the collection.

As the first stage it preselects alone; after ``preselect`` it fuses its list with the dual
encoder's: reciprocal rank fusion (``rrf``: sum of ``weight / (rrf_k + rank)`` over the lists) or
score fusion (``score``: the candidate's score + ``weight`` x the identifier's probability). Its
decoded identifiers and their log-probabilities go in the trace.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...adapters.entries import ConfigError
from .state import Candidate, QueryState

if TYPE_CHECKING:
    from .base import StageContext

logger = logging.getLogger(__name__)


@dataclass
class GenidConfig:
    """Settings of the genid stage."""

    model: str = ""
    """Folder of a trained identifier model (`viewfinder train genid`: ``<out>/adapter``); a relative
    path is looked up beside the preset file, then from the working folder."""
    k: int = 10
    """Identifiers decoded per query."""
    beams: int = 10
    fusion: str = "score"
    """How its list joins the candidates already there (``score``, ``rrf``; ``none``: it replaces them)."""
    rrf_k: int = 60
    weight: float = 0.1
    """Its weight in the fusion (the dual encoder's list or score has weight 1). On the tuning halves of
    reports/genid-200/eval-schemes.json (four schemes) and reports/genid-1000/eval-test-semantic.json,
    score fusion at 0.1 was never worse than 0.2 and sometimes better; RRF at weight 1 let a weak
    identifier model outvote CLIP in both."""

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("genid: field 'model' must name a trained identifier model folder")
        if self.k < 1 or self.beams < 1 or self.rrf_k < 1 or self.weight < 0:
            raise ConfigError("genid: 'k', 'beams' and 'rrf_k' must be >= 1, 'weight' >= 0")
        if self.fusion not in ("rrf", "score", "none"):
            raise ConfigError(f"genid: field 'fusion' must be rrf, score or none, got {self.fusion!r}")


def model_folder(model: str, preset_folder: Path | None) -> Path:
    """The identifier model folder a preset names: beside the preset file when there, else as given."""
    path = Path(model).expanduser()
    if not path.is_absolute() and preset_folder is not None and (preset_folder / path).exists():
        return preset_folder / path
    return path


def reciprocal_rank_fusion(rankings: list[list[int]], weights: list[float], rrf_k: int = 60) -> dict[int, float]:
    """Item -> sum over the ranked lists of ``weight / (rrf_k + rank)`` (ranks from 1)."""
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, item in enumerate(ranking, 1):
            fused[item] = fused.get(item, 0.0) + weight / (rrf_k + rank)
    return fused


def fuse(
    candidates: list[Candidate], decoded: list[tuple[Candidate, float]], fusion: str, weight: float, rrf_k: int
) -> list[Candidate]:
    """The candidates and the decoded items (with log-probabilities) as one list, best first."""
    by_id = {c.id: c for c in candidates}
    if fusion == "rrf":
        fused = reciprocal_rank_fusion([[c.id for c in candidates], [c.id for c, _ in decoded]], [1.0, weight], rrf_k)
    else:  # score
        fused = {c.id: c.score for c in candidates}
        floor = min(fused.values(), default=0.0)  # a decoded item the dual encoder did not list
        for c, logprob in decoded:
            fused[c.id] = fused.get(c.id, floor) + weight * math.exp(logprob)
    for c, _ in decoded:
        by_id.setdefault(c.id, c)
    out = []
    for i in sorted(fused, key=lambda i: -fused[i]):
        c = by_id[i]
        c.scores["fused"] = c.score = fused[i]
        out.append(c)
    return out


class GenerativeIds:
    """Query text -> decoded item ids, alone or fused with the candidates before it."""

    name = "genid"

    def __init__(self, model: Any, store: Any, config: GenidConfig, new_items: int = 0) -> None:
        self.model, self.store, self.config, self.new_items = model, store, config, new_items

    @classmethod
    def from_context(cls, config: GenidConfig, ctx: StageContext) -> GenerativeIds:
        from ..genid.model import IdentifierModel, check_index

        folder = model_folder(config.model, ctx.preset_folder)
        try:
            model = IdentifierModel.load(folder)
        except FileNotFoundError as exc:
            raise ConfigError(f"genid: {exc}") from exc
        check = check_index(model.info, ctx.store)
        if check.removed:
            model.restrict(set(model.id_map.ids) - set(check.removed))
        if check.new:
            logger.warning(
                "genid: %d items were added to %s after the identifier model was trained; it cannot return them "
                "until it is trained further on them (continued training)", len(check.new), ctx.store.path,
            )  # fmt: skip
        return cls(model, ctx.store, config, len(check.new))

    def run(self, state: QueryState) -> QueryState:
        if not state.text:
            state.notes["skipped"] = "no query text"
            return state
        start = time.perf_counter()
        decoded = self.model.retrieve([state.text], k=self.config.k, beams=self.config.beams)[0]
        seconds = time.perf_counter() - start
        rows = self.store.items_by_id([i for i, _ in decoded])
        known = {c.id: c for c in state.candidates}
        pairs = []
        for item, logprob in decoded:
            c = known.get(item)
            if c is None:
                row = rows[item]
                c = Candidate(row.id, row.key, row.path, row.text, row.metadata, {}, 0.0)
            c.scores[self.name] = logprob
            pairs.append((c, logprob))
        if self.config.fusion == "none" or not state.candidates:
            for c, logprob in pairs:
                c.score = logprob
            state.candidates = [c for c, _ in pairs]
            fusion = "none"
        else:
            state.candidates = fuse(state.candidates, pairs, self.config.fusion, self.config.weight,
                                    self.config.rrf_k)  # fmt: skip
            fusion = self.config.fusion
        ids = self.model.live
        state.notes.update(
            decoded=[{"id": i, "identifier": ids.get(i), "logprob": lp} for i, lp in decoded],
            fusion=fusion, decode_seconds=seconds, scheme=self.model.info.scheme,
            unreachable_new_items=self.new_items,
        )  # fmt: skip
        return state


__all__ = ["GenerativeIds", "GenidConfig", "fuse", "model_folder", "reciprocal_rank_fusion"]
