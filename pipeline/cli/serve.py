"""``viewfinder serve``: the HTTP API and the web page over one or more indexes."""

from __future__ import annotations

import logging
import os
import re
import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .common import ConfigOpt, console, fail

_NAMED = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})=(?P<dir>.+)$")


def parse_indexes(specs: list[str]) -> dict[str, Path]:
    """``DIR`` or ``NAME=DIR`` each; a bare folder is served under its own name."""
    out: dict[str, Path] = {}
    for spec in specs:
        m = _NAMED.match(spec)
        if m and not Path(spec).expanduser().exists():
            name, folder = m["name"], Path(m["dir"]).expanduser()
        else:
            folder = Path(spec).expanduser()
            name = re.sub(r"[^A-Za-z0-9_.-]", "-", folder.resolve().name).lstrip("-._")[:64] or "index"
        if name in out:
            fail(f"two indexes are named {name!r}: name them, --index NAME=DIR")
        out[name] = folder
    return out


def serve_cmd(
    index: Annotated[
        list[str], typer.Option("--index", "-i", help="Index folder, or NAME=DIR; repeat it to serve several.")
    ],
    config: ConfigOpt = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; any but loopback (127.0.0.1, ::1) needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    token_file: Annotated[
        Path | None,
        typer.Option(help="Read the access token from this file, or write a fresh one there (and print it)."),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Copies of each index's pipeline, each on its own thread (memory grows).")
    ] = 2,
    queue: Annotated[int, typer.Option(min=0, help="Model jobs that may wait for a worker; more get 503.")] = 64,
    max_sessions: Annotated[int, typer.Option(min=1, help="Live feedback sessions and dialogues.")] = 64,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve the search page and its HTTP API (OpenAPI at /docs) over one or more indexes: search with
    words, an image, or an image and an edit; mark hits for feedback rounds; answer a dialogue.

    The token (needed on every route but /api/health) comes from --token-file, else the environment
    variable VIEWFINDER_TOKEN; bound to another address than loopback without either, a fresh one is
    made and printed."""
    import uvicorn

    from ..serve import ServeSettings, create_app
    from ..serve.security import TOKEN_ENV, is_loopback, load_or_create_token

    indexes = parse_indexes(index)
    token, shown = None, None
    if token_file is not None:
        token, fresh = load_or_create_token(token_file)
        shown = f"a fresh token, written to {token_file}" if fresh else f"the token in {token_file}"
    elif os.environ.get(TOKEN_ENV, "").strip():
        token, shown = os.environ[TOKEN_ENV].strip(), f"the token in ${TOKEN_ENV}"
    elif not is_loopback(host):
        token, shown = secrets.token_urlsafe(32), "a fresh token (pass --token-file to keep one)"
    settings = ServeSettings(workers=workers, queue=queue, max_sessions=max_sessions)
    app = create_app(indexes, preset=config, token=token, settings=settings)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    for info in (served.describe() for served in app.state.server.served.values()):
        console.print(
            f"serving [bold]{escape(info['name'])}[/]: {info['count']} items, preset {escape(info['preset'])} "
            f"({', '.join(info['stages'])})",
            soft_wrap=True,
            highlight=False,
        )
    console.print(f"open {url}   (API: {url}docs)", soft_wrap=True, highlight=False)
    if token is not None:
        how = f"open {url}?token=TOKEN once, or send 'Authorization: Bearer TOKEN'"
        console.print(f"needs {escape(shown or '')}: {how}", soft_wrap=True, highlight=False)
        if shown and shown.startswith("a fresh"):
            console.print(f"token: {token}\nopen {url}?token={token}", soft_wrap=True, highlight=False)
    if access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=access_log)
