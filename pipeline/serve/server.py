"""What one running server holds: the served indexes, the worker pool, live sessions, thumbnails,
metrics and its limits; the routes ask it for these."""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..store.search import SearchResult
from .errors import LimitError, NotFoundError, OverloadedError
from .indexes import Replica, ServedIndex, Thumbnails
from .metrics import ServerMetrics
from .pool import WorkerPool
from .sessions import SessionRegistry
from .settings import ServeSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")

INDEX_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""What an index may be called (it is a URL path segment)."""


class Server:
    """The state behind one app (built by :func:`.app.create_app`)."""

    def __init__(self, served: Mapping[str, ServedIndex], settings: ServeSettings, token: str | None) -> None:
        self.served = dict(served)
        self.settings = settings
        self.token = token
        self.pool = WorkerPool(settings.workers * len(self.served), settings.queue)
        self.sessions = SessionRegistry(settings.max_sessions, settings.session_idle_s)
        self.thumbnails = Thumbnails(settings.thumbnail_px, settings.thumbnail_cache, settings.max_image_pixels)
        self.metrics = ServerMetrics(lambda: self.pool.queued, lambda: self.pool.pending, self.sessions.count)
        self._uploads: Path | None = None
        self._uploads_lock = threading.Lock()

    @classmethod
    def load(cls, indexes: Mapping[str, str | Path], preset: Any, settings: ServeSettings, token: str | None) -> Server:
        if not indexes:
            raise ValueError("serve at least one index")
        served = {}
        for name, path in indexes.items():
            if not INDEX_NAME.match(name):
                raise ValueError(f"index name {name!r}: letters, digits, '_', '.', '-' (at most 64), as in a URL")
            served[name] = ServedIndex.load(name, path, preset, copies=settings.workers)
            logger.info(
                "serving %s (%s) as %r with preset %s", path, served[name].root, name, served[name].pipeline.name
            )
        return cls(served, settings, token)

    def close(self) -> None:
        self.sessions.clear()
        for served in self.served.values():
            served.close()
        if self._uploads is not None:
            shutil.rmtree(self._uploads, ignore_errors=True)

    @property
    def uploads(self) -> Path:
        """A private folder for uploaded query images while their search or session lives (made at the
        first upload, removed when the app shuts down)."""
        with self._uploads_lock:
            if self._uploads is None:
                self._uploads = Path(tempfile.mkdtemp(prefix="viewfinder-serve-"))
            return self._uploads

    # ------------------------------------------------------------------ lookups and limits
    def index(self, name: str) -> ServedIndex:
        served = self.served.get(name)
        if served is None:
            raise NotFoundError(f"no index {name!r} here; served: {sorted(self.served)}")
        return served

    def check_text(self, text: str, what: str = "query") -> str:
        if len(text) > self.settings.max_query_chars:
            raise LimitError(f"the {what} is {len(text)} characters long; this server takes at most "
                             f"{self.settings.max_query_chars}")  # fmt: skip
        return text

    def check_edit(self, edit: str | None) -> str | None:
        """The edit of a composed query (None when absent or blank)."""
        if edit is None or not edit.strip():
            return None
        if len(edit) > self.settings.max_edit_chars:
            raise LimitError(f"the edit is {len(edit)} characters long; at most {self.settings.max_edit_chars}")
        return edit

    def check_k(self, k: int) -> int:
        if k > self.settings.max_k:
            raise LimitError(f"k is {k}; this server returns at most {self.settings.max_k} hits")
        return k

    def check_marks(self, *marks: list[int]) -> None:
        n = sum(len(m) for m in marks)
        if n > self.settings.max_marks:
            raise LimitError(f"{n} marks in one round; at most {self.settings.max_marks}")

    # ------------------------------------------------------------------ model work
    async def model_work(self, served: ServedIndex, fn: Callable[[Replica], T], pinned: Replica | None = None) -> T:
        """``fn(replica)`` on the thread of ``pinned``, or else of the least busy copy of the index's
        pipeline (503 at once when the pool is full)."""
        replica = pinned or served.least_busy()
        try:
            return await self.pool.run(replica, lambda: fn(replica))
        except OverloadedError:
            self.metrics.overloaded.inc()
            raise

    def observe(self, served: ServedIndex, *results: SearchResult) -> None:
        for result in results:
            self.metrics.observe_stages(served.name, result.timings)
