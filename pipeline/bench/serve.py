"""Load on ``viewfinder serve``: N concurrent clients on loopback for a bounded time.

The server runs as its own process (``viewfinder serve``, as a user starts it); the clients are
asyncio tasks in this process, each with its own keep-alive HTTP/1.1 connection. Measured in one run:

* the bare in-process ``Pipeline.search`` rate (one caller, the same preset and queries), before
  the server starts and after it stops, so the two never share the cores;
* text search and feedback rounds (each client keeps a session: mark its first hit relevant and its
  second not, next round; a fresh session when the rounds run out) at each concurrency level:
  requests/s, p50/p95/p99 latency, errors and 5xx;
* overload: a burst of more simultaneous requests than the pool's workers and queue hold, over
  connections opened beforehand: how many are refused (503) and how fast;
* the server's resident memory after each phase, and optionally over a soak.

The clients share the machine with the server: on a small machine their own CPU time lowers what
the server can do, and the report says how many cores there were.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import Error

QUERIES = [
    "a large red star in the top left",
    "a small blue circle",
    "a green square at the bottom",
    "a yellow triangle on the right and a red circle",
    "a purple heart in the middle",
    "two shapes on a grey background",
    "a large orange cross at the top",
    "a blue star and a green circle",
]
"""Text queries the clients cycle through when none are given (time depends little on what they say)."""

SERVED_NAME = "bench"


class ServeBenchError(Error, RuntimeError):
    """The server under load did not start or answer; the message holds the end of its log."""


@dataclass
class LoadLevel:
    """One kind of request at one concurrency, for ``seconds``."""

    kind: str
    clients: int
    seconds: float
    requests: int
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    """Answers other than 200, and requests that failed (timeouts, resets)."""
    server_errors: int
    """Answers with status >= 500."""
    status: dict[str, int] = field(default_factory=dict)
    rss_mb_after: float | None = None


@dataclass
class ServeBench:
    index: str
    preset: str | None
    command: list[str]
    """How the server was started."""
    workers: int
    queue: int
    seconds_per_level: float
    bare: dict[str, Any] = field(default_factory=dict)
    """The in-process ``Pipeline.search`` rate: one caller, same preset and queries (measured before the
    server starts and again after it stops; ``requests_per_s`` is the better of the two)."""
    levels: list[LoadLevel] = field(default_factory=list)
    overload: dict[str, Any] = field(default_factory=dict)
    soak: dict[str, Any] = field(default_factory=dict)
    goals: dict[str, Any] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _percentiles(ms: list[float]) -> tuple[float, float, float]:
    if not ms:
        return float("nan"), float("nan"), float("nan")
    p50, p95, p99 = np.percentile(np.asarray(ms), [50, 95, 99])
    return float(p50), float(p95), float(p99)


def bare_search_rate(
    index: str | Path, preset: str | None, seconds: float, queries: list[str], k: int = 10
) -> dict[str, Any]:
    """``Pipeline.search`` called in a loop in this process for ``seconds`` (after a warm-up)."""
    from ..stages.runner import Pipeline

    pipeline = Pipeline.from_preset(preset, index=index)
    for query in queries[:8]:
        pipeline.search(query, k=k)
    ms: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        pipeline.search(queries[len(ms) % len(queries)], k=k)
        ms.append(1000 * (time.perf_counter() - t0))
    elapsed = time.perf_counter() - start
    p50, p95, _ = _percentiles(ms)
    name = pipeline.name
    pipeline.store.close()
    return {"preset": name, "requests": len(ms), "requests_per_s": len(ms) / elapsed, "p50_ms": p50, "p95_ms": p95}


class _Server:
    """``viewfinder serve`` in a subprocess on a free loopback port."""

    def __init__(self, index: str | Path, preset: str | None, workers: int, queue: int, max_sessions: int) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable, "-c", "from viewfinder.pipeline.cli import main; main()", "serve",
            "--index", f"{SERVED_NAME}={index}", "--port", str(self.port), "--workers", str(workers),
            "--queue", str(queue), "--max-sessions", str(max_sessions), *(["--config", preset] if preset else []),
        ]  # fmt: skip
        self.log = tempfile.NamedTemporaryFile("w+", prefix="viewfinder-bench-serve-", suffix=".log", delete=False)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.pop("VIEWFINDER_TOKEN", None)
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 600.0) -> None:
        from urllib.error import URLError
        from urllib.request import urlopen

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServeBenchError(
                    f"the server stopped before answering (exit {self.process.returncode}): {self.tail()}"
                )
            try:
                with urlopen(f"{self.url}/api/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (URLError, OSError):
                pass
            time.sleep(0.5)
        raise ServeBenchError(f"the server did not answer within {timeout:.0f} s: {self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------- clients
@dataclass
class _Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Connection:
    """One keep-alive HTTP/1.1 connection to the server: the smallest client there is, so that the
    clients take little of the cores they share with the server (a general-purpose async client
    spends milliseconds per request at 64 connections and more, which a burst would measure)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None) -> _Answer:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        data = b"" if body is None else json.dumps(body).encode()
        kind = "Content-Type: application/json\r\n" if body is not None else ""
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{kind}Content-Length: {len(data)}\r\n\r\n"
        try:
            self.writer.write(head.encode() + data)
            await self.writer.drain()
            status = int((await self.reader.readline()).split()[1])
            headers: dict[str, str] = {}
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            content = await self.reader.readexactly(length) if length else b""
        except BaseException:
            await self.close()  # a broken exchange leaves the connection unusable: the next request reopens
            raise
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return _Answer(status, headers, content)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def _text_client(
    conn: _Connection, stop_at: float, results: list[tuple[float, int]], queries: list[str], offset: int
) -> None:
    i = offset
    while time.perf_counter() < stop_at:
        body = {"text": queries[i % len(queries)], "k": 10}
        i += 1
        t0 = time.perf_counter()
        try:
            status = (await conn.request("POST", f"/api/indexes/{SERVED_NAME}/search", body)).status
        except (OSError, EOFError, ValueError, IndexError, asyncio.IncompleteReadError):
            status = -1  # a reset or garbled exchange counts as an error, not a crash of the bench
        results.append((1000 * (time.perf_counter() - t0), status))


class _FeedbackClient:
    """A client that keeps a session: the first hit marked relevant, the second not, next round. Its
    session starts before the timed window; when its rounds run out, a new one starts (untimed)."""

    def __init__(self, conn: _Connection, queries: list[str], offset: int) -> None:
        self.conn, self.queries, self.i = conn, queries, offset
        self.sid: str | None = None
        self.hits: list[dict[str, Any]] = []

    async def start(self) -> int:
        sessions = f"/api/indexes/{SERVED_NAME}/sessions"
        if self.sid is not None:
            await self.conn.request("DELETE", f"{sessions}/{self.sid}")
            self.sid = None
        r = await self.conn.request("POST", sessions, {"text": self.queries[self.i % len(self.queries)], "k": 10})
        self.i += 1
        if r.status == 200:
            self.sid, self.hits = r.json()["session"], r.json()["result"]["hits"]
        return r.status

    async def run(self, stop_at: float, results: list[tuple[float, int]]) -> None:
        while time.perf_counter() < stop_at:
            if self.sid is None or len(self.hits) < 2:
                status = await self.start()
                if status != 200:
                    results.append((0.0, status))
                    await asyncio.sleep(0.05)
                continue
            body = {"relevant": [self.hits[0]["id"]], "irrelevant": [self.hits[1]["id"]]}
            t0 = time.perf_counter()
            try:
                r = await self.conn.request("POST", f"/api/indexes/{SERVED_NAME}/sessions/{self.sid}/feedback", body)
            except (OSError, EOFError, ValueError, IndexError, asyncio.IncompleteReadError):
                results.append((1000 * (time.perf_counter() - t0), -1))
                self.sid, self.hits = None, []
                continue
            ms = 1000 * (time.perf_counter() - t0)
            if r.status == 400 and b"stops after" in r.body:  # the session's rounds ran out
                self.hits = []
                continue
            results.append((ms, r.status))
            self.hits = r.json()["result"]["hits"] if r.status == 200 else []

    async def end(self) -> None:
        if self.sid is not None:
            await self.conn.request("DELETE", f"/api/indexes/{SERVED_NAME}/sessions/{self.sid}")


async def _connections(port: int, n: int) -> list[_Connection]:
    """``n`` connections, each opened with one untimed request."""
    conns = [_Connection(port) for _ in range(n)]
    await asyncio.gather(*(c.request("GET", "/api/health") for c in conns))
    return conns


async def _run_level(
    port: int, kind: str, clients: int, seconds: float, queries: list[str]
) -> tuple[list[tuple[float, int]], float]:
    conns = await _connections(port, clients)
    results: list[tuple[float, int]] = []
    if kind == "text search":
        start = time.perf_counter()
        await asyncio.gather(*(_text_client(c, start + seconds, results, queries, i) for i, c in enumerate(conns)))
    else:
        users = [_FeedbackClient(c, queries, i) for i, c in enumerate(conns)]
        await asyncio.gather(*(u.start() for u in users))  # round 0 of every session, before the clock starts
        start = time.perf_counter()
        await asyncio.gather(*(u.run(start + seconds, results) for u in users))
    elapsed = time.perf_counter() - start
    if kind != "text search":
        await asyncio.gather(*(u.end() for u in users))
    for c in conns:
        await c.close()
    return results, elapsed


def _level(kind: str, clients: int, results: list[tuple[float, int]], elapsed: float) -> LoadLevel:
    timed = [ms for ms, status in results if status == 200]
    p50, p95, p99 = _percentiles(timed)
    status: dict[str, int] = {}
    for _, code in results:
        status[str(code)] = status.get(str(code), 0) + 1
    errors = sum(n for code, n in status.items() if code != "200")
    server = sum(n for code, n in status.items() if int(code) >= 500)
    return LoadLevel(kind, clients, elapsed, len(results), len(timed) / elapsed, p50, p95, p99, errors, server, status)


async def _burst(port: int, n: int, queries: list[str]) -> list[tuple[float, int, float]]:
    """``n`` text searches sent at once over ``n`` connections opened beforehand: (ms as the client
    saw it, status, ms in the app)."""
    conns = await _connections(port, n)

    async def one(i: int, conn: _Connection) -> tuple[float, int, float]:
        t0 = time.perf_counter()
        r = await conn.request("POST", f"/api/indexes/{SERVED_NAME}/search", {"text": queries[i % len(queries)]})
        return 1000 * (time.perf_counter() - t0), r.status, _server_ms(r.headers)

    out = list(await asyncio.gather(*(one(i, c) for i, c in enumerate(conns))))
    for c in conns:
        await c.close()
    return out


def _server_ms(headers: dict[str, str]) -> float:
    """The app's own time (its ``Server-Timing: app;dur=MS`` header)."""
    for part in headers.get("server-timing", "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name == "app" and dur:
            return float(dur)
    return float("nan")


def bench_serve(
    index: str | Path,
    preset: str | None = None,
    queries: list[str] | None = None,
    clients: tuple[int, ...] = (1, 4, 16, 64),
    seconds: float = 10.0,
    workers: int = 2,
    queue: int = 64,
    overload_clients: int = 256,
    soak_seconds: float = 0.0,
    kinds: tuple[str, ...] = ("text search", "feedback round"),
) -> ServeBench:
    """The figures described in the module's docstring, as one report."""
    from ..store.index_store import IndexStore

    IndexStore.open(index).close()  # a missing index fails here, before anything starts
    queries = queries or QUERIES
    bare = bare_search_rate(index, preset, seconds, queries)
    server = _Server(index, preset, workers, queue, max_sessions=max(64, 2 * max(clients)))
    run = ServeBench(str(index), preset, server.command[3:], workers, queue, seconds, bare)
    try:
        server.wait_ready()
        for kind in kinds:
            for n in clients:
                results, elapsed = asyncio.run(_run_level(server.port, kind, n, seconds, queries))
                level = _level(kind, n, results, elapsed)
                level.rss_mb_after = _rss_mb(server.process.pid)
                run.levels.append(level)
        burst = asyncio.run(_burst(server.port, overload_clients, queries))
        refused = [ms for ms, status, _ in burst if status == 503]
        in_app = [app_ms for _, status, app_ms in burst if status == 503]
        p50, p95, _ = _percentiles(refused)
        app50, app95, _ = _percentiles(in_app)
        run.overload = {
            "simultaneous_requests": overload_clients,
            "pool": workers + queue,
            "status": {str(s): sum(1 for _, c, _ in burst if c == s) for s in sorted({c for _, c, _ in burst})},
            "refused_503_p50_ms": p50,
            "refused_503_p95_ms": p95,
            "refused_503_max_ms": max(refused) if refused else None,
            "refused_503_in_app_p50_ms": app50,
            "refused_503_in_app_p95_ms": app95,
            "rss_mb_after": _rss_mb(server.process.pid),
        }
        if soak_seconds > 0:
            run.soak = _soak(server, soak_seconds, queries)
    finally:
        server.stop()
    after = bare_search_rate(index, preset, seconds, queries)
    run.bare = {"before": bare, "after": after, **max(bare, after, key=lambda b: b["requests_per_s"])}
    run.goals = _goals(run)
    return run


def _soak(server: _Server, seconds: float, queries: list[str], clients: int = 16, step: float = 30.0) -> dict[str, Any]:
    """Text search at ``clients`` for ``seconds``; the server's RSS every ``step`` seconds."""
    samples = [(0.0, _rss_mb(server.process.pid))]
    start, requests, errors = time.perf_counter(), 0, 0
    while time.perf_counter() - start < seconds:
        results, _ = asyncio.run(_run_level(server.port, "text search", clients, min(step, seconds), queries))
        requests += len(results)
        errors += sum(1 for _, status in results if status != 200)
        samples.append((time.perf_counter() - start, _rss_mb(server.process.pid)))
    rss = [mb for _, mb in samples if mb is not None]
    return {
        "clients": clients,
        "seconds": time.perf_counter() - start,
        "requests": requests,
        "errors": errors,
        "rss_mb": samples,
        "rss_growth_mb": (rss[-1] - rss[1]) if len(rss) > 2 else None,
    }


def _goals(run: ServeBench) -> dict[str, Any]:
    """The issue's goals, checked on this run's figures (None where the run did not measure it)."""
    text = {lv.clients: lv for lv in run.levels if lv.kind == "text search"}
    most = max(text) if text else None
    goals: dict[str, Any] = {}
    if most is not None:
        top = text[most]
        lower = [lv.requests_per_s for n, lv in text.items() if n < most]
        goals[f"no errors at {most} clients"] = all(lv.errors == 0 for lv in run.levels if lv.clients == most)
        goals[f"text rps at {most} >= 0.8 x best lower"] = top.requests_per_s >= 0.8 * max(lower) if lower else None
        goals[f"text rps at {most} >= 0.8 x bare Pipeline.search"] = (
            top.requests_per_s >= 0.8 * run.bare["requests_per_s"]
        )
        goals["text rps ratio to bare"] = top.requests_per_s / run.bare["requests_per_s"]
    for what, key in (("seen by the client", "refused_503_p95_ms"), ("in the app", "refused_503_in_app_p95_ms")):
        p95 = run.overload.get(key)
        goals[f"overload 503 p95 <= 50 ms, {what}"] = None if p95 is None or p95 != p95 else p95 <= 50
    if run.soak.get("rss_growth_mb") is not None:
        goals["soak RSS growth MB"] = run.soak["rss_growth_mb"]
    return goals


def report(run: ServeBench) -> dict[str, Any]:
    from ..reports import machine_info

    out = asdict(run)
    out["machine"] = machine_info() | {"load_average_at_end": os.getloadavg()}
    return out
