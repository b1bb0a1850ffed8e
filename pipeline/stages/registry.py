"""Stage names a preset may use, each with its typed config and its builder.

A preset lists stages in order, each a name or a one-key mapping of a name to its settings::

    stages:
      - preselect: {k: 128}
      - rerank: {model: scene-reranker}

Unknown names and unknown settings are errors that list what exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ...adapters.entries import ConfigError, from_dict
from ..config import StageSpec
from .base import Stage, StageContext
from .caption import Caption, CaptionConfig
from .compose import Compose, ComposeConfig
from .genid import GenerativeIds, GenidConfig
from .preselect import Preselect, PreselectConfig
from .rerank import Rerank, RerankConfig
from .rewrite import Normalise, NormaliseConfig, Rewrite, RewriteConfig, RuleRewrite, RuleRewriteConfig

StageRole = Literal["first", "query", "candidates"]
"""What a stage does in a pipeline: ``first`` produces candidates from the whole index (a pipeline
starts with one), ``query`` only writes the query text (so it may come before the first candidates),
``candidates`` rescores or describes the candidates it is given."""


@dataclass(frozen=True)
class StageType:
    """A kind of stage: its config dataclass, how to build it from a pipeline's collaborators, and
    what it does (the registry is the one place that knows; nothing else recognises a stage by name)."""

    name: str
    config_type: type
    build: Callable[[Any, StageContext], Stage]
    role: StageRole
    uses_llm: bool = False
    """Its trace notes hold a language-model call (messages, answer, fallback)."""
    reads_feedback: bool = False
    """It writes the next round's query from the marks on the hits (a feedback session needs one)."""
    composes: bool = False
    """It applies an edit in words to a reference image (a composed query needs one)."""


STAGE_TYPES: dict[str, StageType] = {}


def register_stage(
    name: str,
    config_type: type,
    build: Callable[[Any, StageContext], Stage],
    *,
    role: StageRole,
    uses_llm: bool = False,
    reads_feedback: bool = False,
    composes: bool = False,
) -> None:
    """Make ``name`` usable in presets' ``stages``, declaring what it does."""
    STAGE_TYPES[name] = StageType(name, config_type, build, role, uses_llm, reads_feedback, composes)


register_stage("preselect", PreselectConfig, Preselect.from_context, role="first")
register_stage("genid", GenidConfig, GenerativeIds.from_context, role="first")
register_stage("rerank", RerankConfig, Rerank.from_context, role="candidates")
register_stage("caption", CaptionConfig, Caption.from_context, role="candidates")
register_stage("normalise", NormaliseConfig, Normalise.from_context, role="query", uses_llm=True)
register_stage("rewrite", RewriteConfig, Rewrite.from_context, role="query", uses_llm=True, reads_feedback=True)
register_stage("rewrite-rule", RuleRewriteConfig, RuleRewrite.from_context, role="query", reads_feedback=True)
register_stage("compose", ComposeConfig, Compose.from_context, role="query", uses_llm=True, composes=True)


def stage_names(
    *,
    role: StageRole | None = None,
    uses_llm: bool | None = None,
    reads_feedback: bool | None = None,
    composes: bool | None = None,
) -> tuple[str, ...]:
    """Names of the registered stages with every property given (None: any)."""
    wanted = {"role": role, "uses_llm": uses_llm, "reads_feedback": reads_feedback, "composes": composes}
    return tuple(
        name
        for name, kind in STAGE_TYPES.items()
        if all(value is None or getattr(kind, key) == value for key, value in wanted.items())
    )


def has_stage(names: Iterable[str], **properties: Any) -> bool:
    """Whether any of the stages ``names`` (of a preset's specs or a pipeline's stage objects) has
    every property given (see :func:`stage_names`); unregistered names (test doubles) have none."""
    matching = set(stage_names(**properties))
    return any(name in matching for name in names)


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
    first = next((spec.name for spec in specs if STAGE_TYPES[spec.name].role != "query"), None)
    if first is None or STAGE_TYPES[first].role != "first":
        raise ConfigError(
            f"{where}: the first stage must produce candidates from the index "
            f"({', '.join(stage_names(role='first'))}; only query stages, "
            f"{', '.join(stage_names(role='query'))}, may come before it), got {first!r}"
        )
    return specs


def build_stages(specs: list[StageSpec], ctx: StageContext) -> list[Stage]:
    """Stage objects for a preset's specs (none: preselect alone), their models drawn from ``ctx``."""
    specs = specs or parse_stages(None, "preset")
    return [STAGE_TYPES[spec.name].build(spec.config, ctx) for spec in specs]
