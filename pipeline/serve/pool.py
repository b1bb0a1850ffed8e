"""Admission of model work: a known number of jobs may be submitted and not finished; one more is
refused at once (:class:`OverloadedError`: 503 with Retry-After) instead of piling up. Each job
runs on the one thread of the pipeline copy it is given to (see :class:`.indexes.Replica`)."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, TypeVar

from .errors import OverloadedError

if TYPE_CHECKING:
    from .indexes import Replica

T = TypeVar("T")


class WorkerPool:
    """At most ``lanes + queue`` jobs submitted and not finished, over ``lanes`` threads in all."""

    def __init__(self, lanes: int, queue: int) -> None:
        self.lanes = lanes
        self.capacity = lanes + queue
        self._lock = threading.Lock()
        self._pending = 0
        self._seconds: deque[float] = deque(maxlen=64)
        """Run times of the last jobs (what Retry-After is estimated from)."""

    @property
    def pending(self) -> int:
        """Jobs submitted and not finished (running or waiting)."""
        return self._pending

    @property
    def queued(self) -> int:
        """Jobs waiting for a thread (at least; a busy copy may keep one waiting while another idles)."""
        return max(0, self._pending - self.lanes)

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained: its length times a job's mean time, per thread."""
        mean = sum(self._seconds) / len(self._seconds) if self._seconds else 1.0
        return max(1, min(60, math.ceil((self.queued + 1) * mean / self.lanes)))

    async def run(self, replica: Replica, fn: Callable[[], T]) -> T:
        """Run ``fn`` on ``replica``'s thread and wait for it; :class:`OverloadedError` when full."""
        with self._lock:
            if self._pending >= self.capacity:
                raise OverloadedError(
                    f"the server is busy ({self.lanes} workers, {self.capacity - self.lanes} waiting): "
                    "try again shortly",
                    self.retry_after(),
                )
            self._pending += 1
            replica.pending += 1
        future = replica.executor.submit(self._timed, fn)

        def done(_: Future) -> None:  # also when cancelled before it ran
            with self._lock:
                self._pending -= 1
                replica.pending -= 1

        future.add_done_callback(done)
        return await asyncio.wrap_future(future)

    def _timed(self, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self._seconds.append(time.perf_counter() - start)
