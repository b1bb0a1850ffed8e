"""A bounded pool for model work: a few threads and a queue of known length. A job beyond it is
refused at once (:class:`OverloadedError`: 503 with Retry-After) instead of piling up."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from .errors import OverloadedError

T = TypeVar("T")


class WorkerPool:
    """``workers`` threads; at most ``workers + queue`` jobs submitted and not finished."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers = workers
        self.capacity = workers + queue
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="viewfinder-worker")
        self._lock = threading.Lock()
        self._pending = 0
        self._seconds: deque[float] = deque(maxlen=64)
        """Run times of the last jobs (what Retry-After is estimated from)."""
        self.refused = 0

    @property
    def pending(self) -> int:
        """Jobs submitted and not finished (running or waiting)."""
        return self._pending

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker."""
        return max(0, self._pending - self.workers)

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained: its length times a job's mean time, per worker."""
        mean = sum(self._seconds) / len(self._seconds) if self._seconds else 1.0
        return max(1, min(60, math.ceil((self.queued + 1) * mean / self.workers)))

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a worker and wait for it; :class:`OverloadedError` when the pool is full."""
        with self._lock:
            if self._pending >= self.capacity:
                self.refused += 1
                raise OverloadedError(
                    f"the server is busy ({self.workers} workers, {self.capacity - self.workers} waiting): "
                    "try again shortly",
                    self.retry_after(),
                )
            self._pending += 1
        future = self._executor.submit(self._timed, fn)
        future.add_done_callback(self._done)  # also when cancelled before it ran
        return await asyncio.wrap_future(future)

    def _timed(self, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self._seconds.append(time.perf_counter() - start)

    def _done(self, _: Future) -> None:
        with self._lock:
            self._pending -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
