"""The server's own user errors, and the one place where every :class:`viewfinder.Error` becomes
an HTTP status. Anything else raised while answering a request is a bug: it stays a 500."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse

from ...errors import Error
from ..store.records import StoreError

logger = logging.getLogger(__name__)


class ServeError(Error):
    """A request the server refuses; ``status`` is its HTTP status."""

    status = 400

    def headers(self) -> dict[str, str]:
        return {}


class NotFoundError(ServeError, LookupError):
    """No such index, item, session or dialogue (or nothing to show for it)."""

    status = 404


class PayloadTooLargeError(ServeError, ValueError):
    """An upload over the byte or pixel limit."""

    status = 413


class UnsupportedUploadError(ServeError, ValueError):
    """An upload that is not an image the server can read."""

    status = 415


class LimitError(ServeError, ValueError):
    """A request over a limit of the server (query length, k, marks)."""

    status = 422


class TooManySessionsError(ServeError):
    """Every session slot is taken by a live session."""

    status = 429

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "60"}


class OverloadedError(ServeError, RuntimeError):
    """Every worker is busy and the queue is full: try again after ``retry_after`` seconds."""

    status = 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


def status_for(exc: Error) -> int:
    """The HTTP status of a user error: the server's own say theirs; a missing file, index or model
    is 404, an index that cannot be used as asked 409, a bad query, config or image 400, and a model
    that cannot be loaded or fetched 503."""
    if isinstance(exc, ServeError):
        return exc.status
    if isinstance(exc, FileNotFoundError):
        return 404
    if isinstance(exc, StoreError):
        return 409
    if isinstance(exc, ValueError):
        return 400
    return 503


async def error_response(request: Request, exc: Exception) -> JSONResponse:
    """The one exception handler of :class:`viewfinder.Error`: ``{"detail", "error"}`` with its status."""
    assert isinstance(exc, Error)
    status = status_for(exc)
    headers = exc.headers() if isinstance(exc, ServeError) else {}
    if status >= 500:
        logger.warning("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": str(exc), "error": type(exc).__name__}, status_code=status, headers=headers)
