"""The app: the API, the page and its assets, metrics; the gates in front; one error handler."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from ... import __version__
from ...errors import Error
from .errors import error_response
from .metrics import RequestMetrics
from .routes import api_router
from .security import BodyLimit, TokenAuth
from .server import Server
from .settings import ServeSettings

STATIC = Path(__file__).parent / "static"
"""The page and its assets (shipped inside the package: no CDN, works offline)."""

_NO_PAGE = (
    "<!doctype html><title>viewfinder</title><p>The page is not installed; the API is at <a href='/docs'>/docs</a>."
)


def create_app(
    indexes: Mapping[str, str | Path],
    preset: Any = None,
    token: str | None = None,
    settings: ServeSettings | None = None,
) -> FastAPI:
    """The server of ``indexes`` (name -> index folder), each searched with ``preset`` (None: the
    preset it was built with). With a ``token``, every route but ``/api/health`` needs it. Loads
    every pipeline now, so a wrong index or preset fails here, not at the first request."""
    server = Server.load(indexes, preset, settings or ServeSettings(), token)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            server.close()

    app = FastAPI(
        title="viewfinder",
        version=__version__,
        description="Search pictures with words, an image, or an image and an edit; steer the agent with "
        "feedback rounds and dialogues. Every result carries what each stage did.",
        lifespan=lifespan,
    )
    app.state.server = server
    app.add_exception_handler(Error, error_response)
    app.include_router(api_router(server))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> Response:
        index = STATIC / "index.html"
        if not index.is_file():
            return HTMLResponse(_NO_PAGE)
        return FileResponse(index, media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/metrics", response_class=Response, tags=["server"], responses={200: {"content": {"text/plain": {}}}})
    def metrics() -> Response:
        """Prometheus text: requests and errors by route, latency per stage, queue depth, live sessions."""
        body, content_type = server.metrics.exposition()
        return Response(body, media_type=content_type)

    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # Added innermost first: metrics see every answer, the token is checked before a body is read.
    app.add_middleware(BodyLimit, max_bytes=server.settings.max_upload_bytes)
    if token:
        app.add_middleware(TokenAuth, token=token)
    app.add_middleware(RequestMetrics, metrics=server.metrics)
    return app
