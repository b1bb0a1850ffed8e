"""Compose: a reference image and an edit in words become one description to search with (CIReVL).

The captioner describes the reference image; the language model applies the edit to that caption
("make the circle blue and remove the star"); preselect then searches with the edited description,
fused with the reference image's own vector when its ``reference_weight`` is set. The caption and
the edit enter the prompt as quoted data; a refused answer falls back to the caption followed by
the edit (marked ``fallback`` in the trace), so a search always runs.
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

MAX_EDIT_CHARS = 500
"""Longest edit accepted (a longer one is a clear error, not a truncated instruction)."""


@dataclass
class ComposeConfig(CheckedOptions):
    """Settings of the compose stage (and how it checks its answers: :class:`.checked.CheckedOptions`;
    its verifier matches hits against the reference's caption followed by the edit)."""

    model: str = "smollm2-135m-instruct"
    """Chat model entry that applies the edit; ``none``: no model, the caption and the edit joined
    (the model-free baseline)."""
    prompt: str = "compose-edit"
    captioner: str = "scene-captioner"
    """Captioner entry that describes the reference image."""
    max_chars: int = 200
    max_new_tokens: int = 40
    """Caption length of the reference image's description."""

    def __post_init__(self) -> None:
        if self.max_chars < 2 or self.max_new_tokens < 1:
            raise ConfigError("compose: fields 'max_chars' must be >= 2 and 'max_new_tokens' >= 1")
        self.check_options("compose")


class Compose:
    """Reference image + edit -> the edited description (``state.text``); the image stays for fusion."""

    name = "compose"

    def __init__(
        self,
        llm: Any | None,
        prompt: Prompt | None,
        captioner: Any,
        config: ComposeConfig | None = None,
        writer: QueryWriter | None = None,
    ) -> None:
        self.llm, self.prompt, self.captioner = llm, prompt, captioner
        self.config = config or ComposeConfig()
        if writer is None and llm is not None and prompt is not None:
            writer = QueryWriter(llm, prompt, self.config, max_chars=self.config.max_chars)
        self.writer = writer

    @classmethod
    def from_context(cls, config: ComposeConfig, ctx: StageContext) -> Compose:
        captioner = ctx.model(config.captioner, "captioner")
        if config.model == "none":
            return cls(None, None, captioner, config)
        llm, prompt = ctx.model(config.model, "chat"), load_prompt(config.prompt)
        writer = QueryWriter.from_context(llm, prompt, config, ctx, config.max_chars)
        return cls(llm, prompt, captioner, config, writer)

    def describe(self, image: str) -> str:
        """The captioner's description of the reference image (a clear error if it does not decode)."""
        from ..store.images import ImageDecodeError, load_image
        from ..store.search import QueryError

        try:
            picture = load_image(image)
        except ImageDecodeError as exc:
            raise QueryError(f"the reference image {image} cannot be used: {exc}") from exc
        pixels = self.captioner.image_transform(picture.convert("RGB")).unsqueeze(0)
        return self.captioner.caption(pixels, max_new_tokens=self.config.max_new_tokens, num_beams=1)[0].strip()

    def run(self, state: QueryState) -> QueryState:
        if state.image is None or state.edit is None:
            state.notes["skipped"] = "not a composed query (a reference image and an edit)"
            return state
        if state.round > 0:
            state.notes["skipped"] = "a feedback round: the edit was applied in round 0"
            return state
        caption = self.describe(state.image)
        state.notes["reference_caption"] = caption
        joined = f"{caption}; {state.edit}"
        if self.writer is None:  # the model-free baseline
            state.text, state.notes["fallback"] = joined, False
            return state
        values = {"caption": quoted(caption), "edit": quoted(state.edit)}
        record = self.writer.write(state, values, words=joined, fallbacks=[Candidate(joined, "caption+edit")])
        if record["query"] is None and self.writer.verifier is None:
            state.text = joined
        return state


def check_edit(edit: str) -> str:
    """The edit, stripped; a :class:`QueryError` for an empty or too long one."""
    from ..store.search import QueryError

    text = " ".join(edit.split())
    if not text:
        raise QueryError("the edit is empty: say what to change in the reference image, e.g. 'make the star blue'")
    if len(text) > MAX_EDIT_CHARS:
        raise QueryError(f"the edit is {len(text)} characters long; keep it under {MAX_EDIT_CHARS}")
    return text


def composed_edit(composes: bool, pipeline_name: str, image: Any, edit: str | None) -> str | None:
    """The cleaned edit of a composed query (None without one); a :class:`QueryError` when the edit
    has no reference image or the pipeline has no stage that ``composes`` (applies it)."""
    from ..store.search import QueryError

    if edit is None:
        return None
    if image is None:
        raise QueryError("an edit needs the reference image it applies to: give the image with the edit")
    if not composes:
        raise QueryError(f"the pipeline {pipeline_name!r} has no compose stage: use a preset with one (e.g. agent)")
    return check_edit(edit)


__all__ = ["MAX_EDIT_CHARS", "Compose", "ComposeConfig", "check_edit", "composed_edit"]
