"""What every command shares: consoles, logging set-up, the one error path, common options."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.console import Console

APP_SETTINGS = dict(
    help="viewfinder: agentic image-text retrieval (CLIP preselection over a FAISS index store).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="Pipeline preset: a packaged name (e.g. 'default') or a YAML file."),
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
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


def user_errors() -> tuple[type[BaseException], ...]:
    from ...adapters.open_clip_encoder import ModelLoadError
    from ..config import ConfigError
    from ..store.faiss_index import IndexBuildError
    from ..store.index_store import StoreError
    from ..store.search import QueryError
    from ..store.sources import SourceError

    return (
        ConfigError,
        ModelLoadError,
        StoreError,
        SourceError,
        QueryError,
        IndexBuildError,
        FileNotFoundError,
    )
