"""The server's gates, as ASGI middleware: a bearer token on every route but health (when the
server has one), and a bound on request bodies (413 before a large upload is read to its end).
Also where a token comes from: a file, written with a fresh one when it is missing or empty."""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

TOKEN_ENV = "VIEWFINDER_TOKEN"
COOKIE = "token"
OPEN_PATHS = frozenset({"/api/health"})
"""Routes answered without the token."""


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_or_create_token(path: Path) -> tuple[str, bool]:
    """(the token in ``path``, False), or (a fresh one written there readable by its owner only, True)."""
    path = Path(path).expanduser()
    if path.is_file():
        token = path.read_text(encoding="utf-8").strip()
        if token:
            return token, False
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    return token, True


class TokenAuth:
    """401 on every route but :data:`OPEN_PATHS` unless the request carries the token: an
    ``Authorization: Bearer`` header, or the ``token`` cookie. ``/?token=TOKEN`` sets that cookie
    and redirects to ``/`` (so the page, and the requests it makes, work in a browser)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _valid(self, candidate: str | None) -> bool:
        return bool(candidate) and hmac.compare_digest(candidate.encode(), self.token)  # type: ignore[union-attr]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        request = Request(scope)
        header = request.headers.get("authorization", "")
        bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
        if self._valid(bearer) or self._valid(request.cookies.get(COOKIE)):
            return await self.app(scope, receive, send)
        if scope["path"] == "/" and self._valid(request.query_params.get("token")):
            kept = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            response = RedirectResponse(f"/?{kept}" if kept else "/", status_code=303)  # the page's state stays
            response.set_cookie(COOKIE, self.token.decode(), httponly=True, samesite="strict")
            return await response(scope, receive, send)
        response = JSONResponse(
            {"detail": "this server needs its token: an 'Authorization: Bearer TOKEN' header, "
             "or open /?token=TOKEN once in the browser", "error": "Unauthorized"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
        await response(scope, receive, send)


class BodyLimit:
    """413 for a request whose body is over ``max_bytes``: at once when its Content-Length says so,
    else as soon as that many bytes have arrived (the app's own answer is then dropped)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> JSONResponse:
        return JSONResponse(
            {"detail": f"the request body is over the {self.max_bytes}-byte limit", "error": "PayloadTooLargeError"},
            status_code=413,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        try:
            if declared is not None and int(declared) > self.max_bytes:
                return await self._too_large()(scope, receive, send)
        except ValueError:
            return await JSONResponse({"detail": "malformed Content-Length"}, status_code=400)(scope, receive, send)
        received = 0
        over = False

        async def limited() -> Message:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True
                    raise _BodyTooLarge
            return message

        async def guarded(message: Message) -> None:
            if not over:
                await send(message)

        try:
            await self.app(scope, limited, guarded)
        except Exception:
            if not over:
                raise
        if over:
            await self._too_large()(scope, receive, send)


class _BodyTooLarge(Exception):
    """Raised into the app reading a body past the limit (its answer is replaced by a 413)."""
