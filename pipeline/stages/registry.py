"""Stage names a preset may use, each with its typed config and its builder.

A preset lists stages in order, each a name or a one-key mapping of a name to its settings::

    stages:
      - preselect: {k: 128}
      - rerank: {model: scene-reranker}

Unknown names and unknown settings are errors that list what exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...adapters.entries import ConfigError, from_dict
from ..config import StageSpec
from .base import Stage, StageContext
from .caption import Caption, CaptionConfig
from .compose import Compose, ComposeConfig
from .genid import GenerativeIds, GenidConfig
from .preselect import Preselect, PreselectConfig
from .rerank import Rerank, RerankConfig
from .rewrite import Normalise, NormaliseConfig, Rewrite, RewriteConfig, RuleRewrite, RuleRewriteConfig


@dataclass(frozen=True)
class StageType:
    """A kind of stage: its config dataclass and how to build it from a pipeline's collaborators."""

    name: str
    config_type: type
    build: Callable[[Any, StageContext], Stage]


STAGE_TYPES: dict[str, StageType] = {}


def register_stage(name: str, config_type: type, build: Callable[[Any, StageContext], Stage]) -> None:
    """Make ``name`` usable in presets' ``stages``."""
    STAGE_TYPES[name] = StageType(name, config_type, build)


register_stage("preselect", PreselectConfig, Preselect.from_context)
register_stage("rerank", RerankConfig, Rerank.from_context)
register_stage("caption", CaptionConfig, Caption.from_context)
register_stage("normalise", NormaliseConfig, Normalise.from_context)
register_stage("rewrite", RewriteConfig, Rewrite.from_context)
register_stage("rewrite-rule", RuleRewriteConfig, RuleRewrite.from_context)
register_stage("compose", ComposeConfig, Compose.from_context)
register_stage("genid", GenidConfig, GenerativeIds.from_context)

FIRST_STAGES = ("preselect", "genid")
"""Stages that produce candidates from the whole index; a pipeline starts with one of these."""
QUERY_STAGES = ("normalise", "rewrite", "rewrite-rule", "compose")
"""Stages that only change the query text, so they may come before the first candidates."""


def parse_stages(raw: Any, where: str) -> list[StageSpec]:
    """Validate a preset's ``stages`` list (None: preselect only, today's search)."""
    if raw is None:
        return [StageSpec("preselect", PreselectConfig())]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: field 'stages' must be a non-empty list of stage names or mappings")
    specs = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            name, params = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            name, params = next(iter(item.items()))
            params = params or {}
        else:
            raise ConfigError(f"{where}: stages[{i}] must be a stage name or a one-key mapping {{name: {{settings}}}}")
        if name not in STAGE_TYPES:
            raise ConfigError(f"{where}: stages[{i}]: unknown stage {name!r}; known stages: {sorted(STAGE_TYPES)}")
        config = from_dict(STAGE_TYPES[name].config_type, params, f"{where}: stages[{i}] ({name})")
        specs.append(StageSpec(name, config))
    first = next((spec.name for spec in specs if spec.name not in QUERY_STAGES), None)
    if first not in FIRST_STAGES:
        raise ConfigError(
            f"{where}: the first stage must produce candidates from the index ({', '.join(FIRST_STAGES)}; only "
            f"query stages, {', '.join(QUERY_STAGES)}, may come before it), got {first!r}"
        )
    return specs


def build_stages(specs: list[StageSpec], ctx: StageContext) -> list[Stage]:
    """Stage objects for a preset's specs (none: preselect alone), their models drawn from ``ctx``."""
    specs = specs or parse_stages(None, "preset")
    return [STAGE_TYPES[spec.name].build(spec.config, ctx) for spec in specs]
