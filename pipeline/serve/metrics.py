"""Prometheus metrics of one server (a registry of its own, so several apps in one process never mix):
requests and errors by route, request latency, latency per pipeline stage (from each result's
timings), the worker queue, and live sessions."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .security import ASGIApp, Message, Receive, Scope, Send

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerMetrics:
    """The metrics of one app; the queue, pending jobs and live sessions are read when scraped."""

    def __init__(self, queue_depth: Callable[[], float], pending: Callable[[], float], live: Callable[[str], float]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "viewfinder_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self.errors = Counter(
            "viewfinder_request_errors", "HTTP answers with status >= 400", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "viewfinder_request_seconds", "Time to answer a request", ["route"], buckets=_BUCKETS, registry=r
        )
        self.stage = Histogram(
            "viewfinder_stage_seconds", "Time of one pipeline stage in one round", ["index", "stage"],
            buckets=_BUCKETS, registry=r,
        )  # fmt: skip
        self.overloaded = Counter("viewfinder_overloaded", "Model jobs refused because the pool was full", registry=r)
        Gauge("viewfinder_queue_depth", "Model jobs waiting for a worker", registry=r).set_function(queue_depth)
        Gauge("viewfinder_jobs_pending", "Model jobs running or waiting", registry=r).set_function(pending)
        sessions = Gauge("viewfinder_live_sessions", "Live feedback sessions and dialogues", ["kind"], registry=r)
        for kind in ("session", "dialogue"):
            sessions.labels(kind).set_function(lambda kind=kind: live(kind))

    def observe_stages(self, index: str, timings: dict[str, float]) -> None:
        for stage, seconds in timings.items():
            self.stage.labels(index, stage).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestMetrics:
    """ASGI middleware counting every request by its route's path template (never the raw path, so
    the label set stays bounded), its status and its time; each answer says how long the app took
    until it started (``Server-Timing: app;dur=MS``)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def recorded(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                took = f"app;dur={1000 * (time.perf_counter() - start):.2f}".encode()
                message["headers"] = [*message.get("headers", []), (b"server-timing", took)]
            await send(message)

        try:
            await self.app(scope, receive, recorded)
        finally:
            route = getattr(scope.get("route"), "path", None) or (
                "/static" if scope["path"].startswith("/static/") else "unmatched"
            )
            m = self.metrics
            m.requests.labels(route, scope["method"], str(status)).inc()
            if status >= 400:
                m.errors.labels(route, str(status)).inc()
            m.latency.labels(route).observe(time.perf_counter() - start)
