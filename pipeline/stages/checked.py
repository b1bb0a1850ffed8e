"""The part every language-model query stage shares: ask, ground the answers, verify, choose.

A stage's config carries the options (:class:`CheckedOptions`: ``n``, ``ground``, ``verify``,
``verify_model``); :class:`QueryWriter` asks the model for ``n`` answers (beams), holds or repairs
their words to the collection's (:mod:`.grounding`), and, with a verifier (:mod:`.verify`), keeps
the candidate whose hits best match the user's own words, the fallbacks the stage names among the
candidates. Every candidate, its verdict and why the winner won go into the trace notes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...adapters.entries import ConfigError
from ..llm.ask import ask_for_query
from ..llm.prompts import Prompt
from .grounding import GROUND_MODES, Vocabulary, stage_vocabulary
from .state import QueryState
from .verify import VERIFY_MODES, Candidate, Verifier, why


@dataclass
class CheckedOptions:
    """How a language-model query stage checks its own answers (all off by default)."""

    n: int = 1
    """Answers asked of the model (beams of a beam search; sampled when the model has a temperature)."""
    ground: str = "none"
    """``none``, ``constrain`` (the model writes only the collection's words) or ``repair`` (words
    off the list become the nearest known word in the encoder's text space)."""
    verify: str = "none"
    """``none`` (the first accepted answer), ``itm`` (the candidate whose hits the matcher scores
    best against the user's own words) or ``llm`` (whose hits' descriptions the stage's model would
    most readily have written for the user's words); the user's text is a candidate too."""
    verify_model: str = "scene-reranker"
    """The matcher entry the verifier scores with."""
    verify_top: int = 3
    """Hits of each candidate the verifier scores."""

    def check_options(self, stage: str) -> None:
        if self.n < 1 or self.n > 16:
            raise ConfigError(f"{stage}: field 'n' must lie in 1..16, got {self.n}")
        if self.ground not in GROUND_MODES:
            raise ConfigError(f"{stage}: field 'ground' must be one of {GROUND_MODES}, got {self.ground!r}")
        if self.verify not in VERIFY_MODES:
            raise ConfigError(f"{stage}: field 'verify' must be one of {VERIFY_MODES}, got {self.verify!r}")
        if self.verify_top < 1:
            raise ConfigError(f"{stage}: field 'verify_top' must be >= 1, got {self.verify_top}")


def apply_answer(state: QueryState, record: dict[str, Any]) -> QueryState:
    """Put a language-model call's record in the trace notes; an accepted answer becomes the query,
    a refused one leaves it and is marked ``fallback``."""
    state.notes.update(record)
    state.notes["fallback"] = record["query"] is None
    if record["query"] is not None:
        state.text = record["query"]
    return state


class QueryWriter:
    """Asks a chat model for a query and checks it as a stage's :class:`CheckedOptions` say."""

    def __init__(
        self,
        llm: Any,
        prompt: Prompt,
        options: CheckedOptions,
        *,
        max_chars: int = 200,
        vocabulary: Vocabulary | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self.llm, self.prompt, self.options, self.max_chars = llm, prompt, options, max_chars
        self.vocabulary, self.verifier = vocabulary, verifier
        if options.ground != "none" and vocabulary is None:
            raise ConfigError(f"ground: {options.ground!r} needs the collection's vocabulary")
        if options.verify != "none" and verifier is None:
            raise ConfigError(f"verify: {options.verify!r} needs a verifier")

    @classmethod
    def from_context(cls, llm: Any, prompt: Prompt, options: CheckedOptions, ctx: Any, max_chars: int) -> QueryWriter:
        vocabulary = stage_vocabulary(ctx) if options.ground != "none" else None
        verifier = None
        if options.verify != "none":
            key = f"__verifier__:{options.verify_model}:{options.verify_top}"
            if key not in ctx.models:
                ctx.models[key] = Verifier.from_context(ctx, options.verify_model, top=options.verify_top)
            verifier = ctx.models[key]
        return cls(llm, prompt, options, max_chars=max_chars, vocabulary=vocabulary, verifier=verifier)

    def write(
        self,
        state: QueryState,
        values: dict[str, str],
        *,
        words: str,
        fallbacks: list[Candidate],
        exclude: set[int] | None = None,
        relevant: list[int] | None = None,
        rejected: list[int] | None = None,
    ) -> dict[str, Any]:
        """Ask, check and choose; the chosen text becomes ``state.text`` (a refused answer without a
        verifier leaves it). ``words``: what the user wrote (the verifier matches hits against it);
        ``fallbacks``: candidates that need no model (the user's text, the current query).
        Returns the call's record, also put in ``state.notes``."""
        opts = self.options
        grounded = opts.ground != "none" and self.vocabulary is not None and bool(self.vocabulary.words)
        if opts.ground != "none" and not grounded:
            state.notes["ground_skipped"] = "the index holds no texts or captions to take words from"
        constrain = grounded and opts.ground == "constrain" and hasattr(self.llm, "generate_candidates")
        allowed = self.vocabulary.allowed if constrain and self.vocabulary is not None else None
        record = ask_for_query(self.llm, self.prompt, values, max_chars=self.max_chars, n=opts.n, words=allowed)
        answers = [c["query"] for c in record.get("candidates", [])] or [record["query"]]
        texts = list(dict.fromkeys(a for a in answers if a))
        if grounded and not constrain and self.vocabulary is not None:
            repaired = [self.vocabulary.repair(t) for t in texts]
            record["repairs"] = [changes for _, changes in repaired]
            texts = list(dict.fromkeys(t for t, _ in repaired))
            if texts and record["query"] is not None:
                record["query"] = texts[0]
        if self.verifier is None:
            apply_answer(state, record)
            return record
        state.notes.update(record)
        pool = [Candidate(t, f"model:{i}") for i, t in enumerate(texts)]
        pool += [c for c in fallbacks if c.text and c.text not in texts]
        judge = None
        if opts.verify == "llm" and hasattr(self.llm, "score_replies"):
            conversation = self.prompt.format(**values)

            def judge(descriptions: list[str]) -> list[float]:
                return self.llm.score_replies(conversation, descriptions)

        best, verdicts = self.verifier.choose(
            words, pool, exclude=exclude, relevant=relevant, rejected=rejected, judge=judge
        )
        state.text = pool[best].text
        state.notes.update(
            verdicts=verdicts, why=why(verdicts), chosen=pool[best].source, fallback=record["query"] is None,
        )  # fmt: skip
        return record


__all__ = ["CheckedOptions", "QueryWriter", "apply_answer"]
