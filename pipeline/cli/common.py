"""What every command shares: consoles, logging set-up, the one error path, common options."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Annotated, Any

import click
import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from ...adapters.entries import packaged_names

PIPE_WIDTH = 1 << 16
"""Columns the consoles use when output is not a terminal (piped, redirected, CliRunner): wide
enough that rich never wraps, folds or cuts a path, a caption or a suggested command."""


class PipeConsole(Console):
    """A rich console that sizes itself to the terminal, and never wraps output that goes elsewhere.

    The check is made at each print, so a console made at import time still does the right thing
    when ``sys.stdout`` is swapped later (a test runner, a redirect).
    """

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(PIPE_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


def make_console(stderr: bool = False) -> Console:
    """A console for a command's output (``stderr=True``: for its errors and notes)."""
    return PipeConsole(stderr=stderr)


console = make_console()
err = make_console(stderr=True)

_TYPE_NOISE = {"<bool>", "<str>"}
"""Type labels typer (>= 0.2x) prints beside every parameter; for flags and text they only add noise."""


def _quiet_type_labels(params: list[click.Parameter]) -> list[click.Parameter]:
    """Drop the ``<bool>``/``<str>`` labels from the help of ``params`` (keeping ``<int>``, ``<path>``...),
    and shorten ``<int range> [x>=1]`` to ``<int> [x>=1]``."""
    for param in params:
        shown: Callable[[click.Context], Any] | None = getattr(param, "display_type_rich", None)
        if shown is None or getattr(shown, "_quiet", False):
            continue

        def quiet(ctx: click.Context, _shown: Callable[[click.Context], Any] = shown) -> Any:
            label = _shown(ctx)
            if isinstance(label, str) and label.endswith(" range>"):  # the range itself follows: [x>=1]
                label = label[: -len(" range>")] + ">"
            return None if label in _TYPE_NOISE else label

        quiet._quiet = True  # type: ignore[attr-defined]
        param.display_type_rich = quiet  # type: ignore[attr-defined]
    return params


class ViewfinderCommand(TyperCommand):
    """A typer command whose help leaves out the ``<bool>``/``<str>`` type labels."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return _quiet_type_labels(super().get_params(ctx))


class ViewfinderGroup(TyperGroup):
    """A typer group whose help leaves out the ``<bool>``/``<str>`` type labels."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return _quiet_type_labels(super().get_params(ctx))


class ViewfinderTyper(typer.Typer):
    """``typer.Typer`` whose groups and commands are :class:`ViewfinderGroup` / :class:`ViewfinderCommand`."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", ViewfinderGroup)
        kwargs.setdefault("pretty_exceptions_enable", False)
        super().__init__(**kwargs)

    def command(self, name: str | None = None, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a command (as a :class:`ViewfinderCommand` unless ``cls`` is given)."""
        if kwargs.get("cls") is None:
            kwargs["cls"] = ViewfinderCommand
        return super().command(name, **kwargs)


APP_SETTINGS = dict(
    help="viewfinder: agentic image-text retrieval (CLIP preselection over a FAISS index store).",
    no_args_is_help=True,
    add_completion=False,
)


def _packaged(kind: str) -> str:
    return ", ".join(packaged_names(kind))


ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        help=f"Pipeline preset: a packaged name ({_packaged('presets')}) or a YAML file.",
        show_default=False,
    ),
]


class _QuietRoot(logging.Filter):
    """open_clip logs chatty INFO/WARNING lines on the root logger; keep them for --verbose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "root" or record.levelno >= logging.ERROR


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if not verbose:
        handler.addFilter(_QuietRoot())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True)


def fail(message: str) -> None:
    """The one error path of every command: ``error: MESSAGE`` on stderr (one line), exit status 2."""
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions a user can meet (a bad config, a missing model, data or index...): every command
    catches these and hands their message, which carries the fix, to :func:`fail`. Anything else is
    a bug and keeps its traceback. (Imported when called, at failure time, so ``--help`` stays fast.)"""
    from ...adapters.chat import ChatModelLoadError
    from ...adapters.entries import ConfigError
    from ...adapters.open_clip_encoder import ModelLoadError
    from ...adapters.package_file import FetchError
    from ..eval.retrieval import EvalDataError
    from ..scenes.dataset import SceneDataError
    from ..store.faiss_index import IndexBuildError
    from ..store.index_store import StoreError
    from ..store.search import QueryError
    from ..store.sources import SourceError

    return (
        ConfigError,
        ModelLoadError,
        ChatModelLoadError,
        FetchError,
        EvalDataError,
        SceneDataError,
        StoreError,
        SourceError,
        QueryError,
        IndexBuildError,
        FileNotFoundError,
        FileExistsError,
    )
