"""Live feedback sessions and dialogues: found by id, bounded in number, forgotten when idle."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import NotFoundError, TooManySessionsError

logger = logging.getLogger(__name__)

Kind = Literal["session", "dialogue"]


@dataclass
class LiveSession:
    """A :class:`..agent.session.Session` or :class:`..agent.dialogue.DialogueSession` on one index."""

    id: str
    kind: Kind
    index: str
    agent: Any
    replica: Any = None
    """The copy of the index's pipeline the session runs on (its state refers to it)."""
    upload: Path | None = None
    """The uploaded query image the session's rounds read (deleted with the session)."""
    last_used: float = field(default_factory=time.monotonic)


class SessionRegistry:
    """At most ``max_live`` sessions (both kinds together); one unused for ``idle_s`` is dropped."""

    def __init__(self, max_live: int, idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_live = max_live
        self.idle_s = idle_s
        self.clock = clock
        self._live: dict[str, LiveSession] = {}
        self._lock = threading.Lock()

    def count(self, kind: Kind | None = None) -> int:
        return sum(1 for s in list(self._live.values()) if kind is None or s.kind == kind)

    def check_room(self) -> None:
        """:class:`TooManySessionsError` when a new session could not be kept (before any work is done)."""
        with self._lock:
            self._sweep()
            if len(self._live) >= self.max_live:
                raise TooManySessionsError(
                    f"{self.max_live} sessions are live, the most this server keeps: finish one "
                    f"(DELETE it) or wait until one has been idle for {self.idle_s:.0f} s"
                )

    def add(self, kind: Kind, index: str, agent: Any, replica: Any, upload: Path | None = None) -> LiveSession:
        self.check_room()
        live = LiveSession(secrets.token_urlsafe(12), kind, index, agent, replica, upload, self.clock())
        with self._lock:
            self._live[live.id] = live
        return live

    def get(self, kind: Kind, index: str, sid: str) -> LiveSession:
        with self._lock:
            self._sweep()
            live = self._live.get(sid)
            if live is None or live.kind != kind or live.index != index:
                raise NotFoundError(f"no live {kind} {sid!r} on index {index!r} (finished, expired or never started)")
            live.last_used = self.clock()
            return live

    def remove(self, kind: Kind, index: str, sid: str) -> None:
        live = self.get(kind, index, sid)
        with self._lock:
            self._live.pop(live.id, None)
        _forget(live)

    def clear(self) -> None:
        with self._lock:
            gone, self._live = list(self._live.values()), {}
        for live in gone:
            _forget(live)

    def _sweep(self) -> None:
        now = self.clock()
        for sid, live in list(self._live.items()):
            if now - live.last_used > self.idle_s:
                del self._live[sid]
                logger.info("%s %s on %s expired after %.0f s idle", live.kind, sid, live.index, now - live.last_used)
                _forget(live)


def _forget(live: LiveSession) -> None:
    if live.upload is not None:
        live.upload.unlink(missing_ok=True)
