"""Stages that rewrite the query with a language model.

* ``normalise`` (before the first search): what a person typed, free-form, into a plain description
  in the words the encoder knows.
* ``rewrite`` (a feedback round, EIIRwQR style): a new query from the current one and the captions
  of the candidates the person marked relevant and not relevant. It comes before preselect in a
  preset's stages: in round 0 there is no feedback and it passes; in round n it reads the marks on
  round n-1's candidates, which the state still holds, and preselect then searches with its query.

``rewrite-rule`` is the fixed-rule baseline with no model: the caption of the first candidate marked
relevant (its own text where it has no caption) becomes the query (the query stays when none is).

The model stages send user text and captions as quoted data (:func:`..llm.prompts.quoted`) and accept the
model's answer only after :func:`..llm.parse.parse_query` checked it; a refused answer keeps the
previous query and is marked ``fallback`` in the trace, with the prompt, the raw answer and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...adapters.entries import ConfigError
from ..llm.prompts import Prompt, load_prompt, quoted
from .checked import CheckedOptions, QueryWriter
from .state import QueryState
from .verify import Candidate

if TYPE_CHECKING:
    from .base import StageContext


@dataclass
class NormaliseConfig(CheckedOptions):
    """Settings of the normalise stage (and how it checks its answers: :class:`.checked.CheckedOptions`)."""

    model: str = "smollm2-135m-instruct"
    """Chat model entry (packaged name, YAML path)."""
    prompt: str = "normalise"
    """Packaged prompt name or a prompt file."""
    max_chars: int = 200
    """Longest accepted answer."""

    def __post_init__(self) -> None:
        if self.max_chars < 2:
            raise ConfigError("normalise: field 'max_chars' must be >= 2")
        self.check_options("normalise")


@dataclass
class RewriteConfig(CheckedOptions):
    """Settings of the rewrite stage (and how it checks its answers: :class:`.checked.CheckedOptions`;
    its verifier also weighs the feedback marks)."""

    model: str = "smollm2-135m-instruct"
    prompt: str = "rewrite-feedback"
    max_chars: int = 200
    max_captions: int = 5
    """Captions of marked candidates sent per side (relevant, not relevant)."""

    def __post_init__(self) -> None:
        if self.max_chars < 2 or self.max_captions < 1:
            raise ConfigError("rewrite: fields 'max_chars' must be >= 2 and 'max_captions' >= 1")
        self.check_options("rewrite")


def marked_texts(state: QueryState, ids: list[int]) -> list[str]:
    """The captions (else the own texts) of the marked candidates ``ids`` that have one, in order."""
    by_id = {c.id: c for c in state.candidates}
    texts = (by_id[i].caption or by_id[i].text for i in ids if i in by_id)
    return [t for t in texts if t]


class Normalise:
    """Rewrites the user's free-form query into a plain description, before preselection."""

    name = "normalise"

    def __init__(
        self, llm: Any, prompt: Prompt, config: NormaliseConfig | None = None, writer: QueryWriter | None = None
    ) -> None:
        self.llm, self.prompt, self.config = llm, prompt, config or NormaliseConfig()
        self.writer = writer or QueryWriter(llm, prompt, self.config, max_chars=self.config.max_chars)

    @classmethod
    def from_context(cls, config: NormaliseConfig, ctx: StageContext) -> Normalise:
        llm, prompt = ctx.model(config.model, "chat"), load_prompt(config.prompt)
        return cls(llm, prompt, config, QueryWriter.from_context(llm, prompt, config, ctx, config.max_chars))

    def run(self, state: QueryState) -> QueryState:
        if not state.text:
            state.notes["skipped"] = "no query text"
            return state
        if state.round > 0:
            state.notes["skipped"] = "a feedback round: the query was normalised in round 0"
            return state
        typed = state.text
        self.writer.write(state, {"query": quoted(typed)}, words=typed, fallbacks=[Candidate(typed, "typed")])
        return state


class Rewrite:
    """Rewrites the query from the captions of the candidates the latest feedback marked."""

    name = "rewrite"

    def __init__(
        self, llm: Any, prompt: Prompt, config: RewriteConfig | None = None, writer: QueryWriter | None = None
    ) -> None:
        self.llm, self.prompt, self.config = llm, prompt, config or RewriteConfig()
        self.writer = writer or QueryWriter(llm, prompt, self.config, max_chars=self.config.max_chars)

    @classmethod
    def from_context(cls, config: RewriteConfig, ctx: StageContext) -> Rewrite:
        llm, prompt = ctx.model(config.model, "chat"), load_prompt(config.prompt)
        return cls(llm, prompt, config, QueryWriter.from_context(llm, prompt, config, ctx, config.max_chars))

    def run(self, state: QueryState) -> QueryState:
        if not state.feedback or not state.text:
            state.notes["skipped"] = "no feedback to rewrite from"
            return state
        feedback = state.feedback[-1]
        n = self.config.max_captions
        relevant, irrelevant = marked_texts(state, feedback.relevant)[:n], marked_texts(state, feedback.irrelevant)[:n]
        if not relevant and not irrelevant:
            state.notes["skipped"] = "the marked candidates have no captions"
            return state
        values = {"query": quoted(state.text), "relevant": quoted(relevant), "irrelevant": quoted(irrelevant)}
        state.notes["feedback_round"] = feedback.round
        marked_relevant = [i for f in state.feedback for i in f.relevant]
        marked_rejected = sorted({i for f in state.feedback for i in f.irrelevant} - set(marked_relevant))
        fallbacks = [Candidate(state.text, "current")]
        if state.query and state.query != state.text:
            fallbacks.append(Candidate(state.query, "typed"))
        self.writer.write(
            state, values, words=state.query or state.text, fallbacks=fallbacks,
            exclude=set(marked_rejected), relevant=marked_relevant, rejected=marked_rejected,
        )  # fmt: skip
        return state


@dataclass
class RuleRewriteConfig:
    """Settings of the rule-based rewrite (none: the rule has no knobs)."""


class RuleRewrite:
    """The caption of the first candidate marked relevant in the latest feedback becomes the query."""

    name = "rewrite-rule"

    def __init__(self, config: RuleRewriteConfig | None = None) -> None:
        self.config = config or RuleRewriteConfig()

    @classmethod
    def from_context(cls, config: RuleRewriteConfig, ctx: StageContext) -> RuleRewrite:
        return cls(config)

    def run(self, state: QueryState) -> QueryState:
        if not state.feedback:
            state.notes["skipped"] = "no feedback to rewrite from"
            return state
        captions = marked_texts(state, state.feedback[-1].relevant)
        if not captions:
            state.notes["skipped"] = "no candidate marked relevant has a caption"
            return state
        state.text = captions[0]
        state.notes["rule"] = "first relevant caption"
        return state


__all__ = [
    "Normalise",
    "NormaliseConfig",
    "Rewrite",
    "RewriteConfig",
    "RuleRewrite",
    "RuleRewriteConfig",
    "marked_texts",
]
