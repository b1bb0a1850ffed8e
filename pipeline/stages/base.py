"""What a stage is, and what a stage may receive when a pipeline is built from a preset."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from .state import QueryState

if TYPE_CHECKING:
    from ...adapters.base import ImageTextEncoder
    from ..config import Preset
    from ..store.index_store import IndexStore
    from ..store.search import Searcher


@runtime_checkable
class Stage(Protocol):
    """One step of a query: takes the shared state and returns it (changed or not).

    A stage receives its model through its constructor and never loads one itself; its typed
    config says how it works. It may write what the trace should show into ``state.notes``.
    """

    name: ClassVar[str]

    def run(self, state: QueryState) -> QueryState: ...


@dataclass
class StageContext:
    """The collaborators stage builders draw on when a pipeline is built from a preset."""

    preset: Preset
    store: IndexStore
    searcher: Searcher
    """The index searched with the preset's (or the index's) encoder."""
    models: dict[str, Any] = field(default_factory=dict)
    """Models loaded so far by entry name, so stages naming the same model share one copy."""

    @property
    def encoder(self) -> ImageTextEncoder:
        return self.searcher.encoder

    @property
    def preset_folder(self) -> Path | None:
        """The folder of the preset file (None for a packaged preset): relative paths in it start there."""
        source = Path(self.preset.source) if self.preset.source else None
        return source.parent if source is not None and source.is_file() else None

    def model(self, entry: Any, kind: str | None = None) -> Any:
        """The model a (named) entry describes, loaded once per pipeline."""
        from ...adapters.registry import load_entry, load_model

        resolved = load_entry(entry, kind, relative_to=self.preset_folder)  # type: ignore[arg-type]
        if resolved.name not in self.models:
            self.models[resolved.name] = load_model(resolved, kind)  # type: ignore[arg-type]
        return self.models[resolved.name]
