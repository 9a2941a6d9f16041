"""Streamed load: a small asyncio HTTP/1.1 client that times SSE streams chunk by chunk.

wrk only sees whole responses, so streams get their own client. It speaks just enough HTTP/1.1
(chunked or sized bodies, keep-alive) to stay cheap at thousands of chunks per second, and it
counts SSE events, not network reads, so coalesced writes do not inflate or hide chunks.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.wrk import Request

CONNECT_TIMEOUT_S = 10.0


class StreamError(Exception):
    """A stream that did not finish as the protocol says it should."""


FAILURES = (
    OSError,
    EOFError,
    ValueError,
    TimeoutError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    StreamError,
)


@dataclass(slots=True)
class Outcome:
    ttfc_s: float
    total_s: float
    chunks: int


@dataclass
class StreamStats:
    ok: int = 0
    chunks: int = 0
    duration_s: float = 0.0
    ttfc_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: Outcome) -> None:
        self.ok += 1
        self.chunks += outcome.chunks
        self.ttfc_s.append(outcome.ttfc_s)
        self.total_s.append(outcome.total_s)

    def fail(self, kind: str) -> None:
        self.errors[kind] += 1


def encode(request: Request) -> bytes:
    head = [
        f"POST {request.path} HTTP/1.1",
        f"host: {request.host}:{request.port}",
        f"content-length: {len(request.body)}",
    ]
    head += [f"{k}: {v}" for k, v in request.headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + request.body


class SseCounter:
    """Counts `data:` events; the end marker ([DONE], or Anthropic's message_stop) is not a chunk."""

    def __init__(
        self, done_marker: bytes, started: float, on_first: Callable[[], None] | None = None
    ) -> None:
        self.done_marker = done_marker
        self.started = started
        self.on_first = on_first
        self.buffer = b""
        self.chunks = 0
        self.first_at: float | None = None
        self.done = False
        self.error: str | None = None

    def feed(self, data: bytes) -> None:
        events = (self.buffer + data).replace(b"\r\n", b"\n").split(b"\n\n")
        self.buffer = events.pop()
        for event in events:
            if b"data:" not in event:
                continue
            if self.done_marker in event:
                self.done = True
                continue
            payload = event[event.index(b"data:") + 5 :].lstrip()
            if payload.startswith(b'{"error"') or event.startswith(b"event: error"):
                self.error = "error_event"
            if self.first_at is None:
                self.first_at = time.perf_counter()
                if self.on_first is not None:
                    self.on_first()
            self.chunks += 1


async def _read_response(reader: asyncio.StreamReader, counter: SseCounter) -> bool:
    """Reads one response into ``counter``; returns whether the connection can be reused."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    reusable = headers.get("connection") != "close"
    if "chunked" in headers.get("transfer-encoding", ""):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                break
            counter.feed((await reader.readexactly(size + 2))[:-2])
    elif "content-length" in headers:
        counter.feed(await reader.readexactly(int(headers["content-length"])))
    else:
        counter.feed(await reader.read())
        reusable = False
    if status != 200:
        raise StreamError(f"http_{status}")
    return reusable


async def one_stream(
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    payload: bytes,
    done_marker: bytes,
    on_first: Callable[[], None] | None = None,
) -> tuple[Outcome, bool]:
    reader, writer = conn
    started = time.perf_counter()
    counter = SseCounter(done_marker, started, on_first)
    writer.write(payload)
    reusable = await _read_response(reader, counter)
    if counter.error:
        raise StreamError(counter.error)
    if not counter.done or counter.first_at is None:
        raise StreamError("truncated")
    return Outcome(counter.first_at - started, time.perf_counter() - started, counter.chunks), reusable


async def _connect(request: Request) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(request.host, request.port), CONNECT_TIMEOUT_S)


def _close(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
    if conn is not None:
        conn[1].close()


def _kind(exc: BaseException) -> str:
    if isinstance(exc, StreamError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timeout"
    return type(exc).__name__


async def load(
    request: Request, *, concurrency: int, duration_s: float, done_marker: bytes, timeout_s: float
) -> StreamStats:
    """``concurrency`` keep-alive connections each streaming back to back for ``duration_s``."""
    stats = StreamStats()
    payload = encode(request)
    started = time.perf_counter()
    deadline = started + duration_s

    async def worker() -> None:
        conn = None
        while time.perf_counter() < deadline:
            try:
                if conn is None:
                    conn = await _connect(request)
                outcome, reusable = await asyncio.wait_for(one_stream(conn, payload, done_marker), timeout_s)
                stats.add(outcome)
                if not reusable:
                    _close(conn)
                    conn = None
            except FAILURES as exc:
                stats.fail(_kind(exc))
                _close(conn)
                conn = None
                await asyncio.sleep(0.01)  # a refused connection must not become a busy loop
        _close(conn)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    stats.duration_s = time.perf_counter() - started
    return stats


@dataclass
class HoldStats:
    """N streams opened together and held open by a slowly paced provider."""

    wanted: int
    stats: StreamStats
    max_open: int
    baseline_rss_mb: dict[str, float]  # per process role, before the first stream
    rss_at_peak_mb: dict[str, float]  # sampled when the most streams were open
    open_at_peak: int

    @property
    def mb_per_stream(self) -> float | None:
        return sum(self.mb_per_stream_by_role.values()) if self.open_at_peak else None

    @property
    def mb_per_stream_by_role(self) -> dict[str, float]:
        if not self.open_at_peak:
            return {}
        return {
            role: (self.rss_at_peak_mb.get(role, 0.0) - base) / self.open_at_peak
            for role, base in self.baseline_rss_mb.items()
        }


async def hold(
    request: Request,
    *,
    streams: int,
    ramp_s: float,
    done_marker: bytes,
    timeout_s: float,
    rss_mb: Callable[[], dict[str, float]],
) -> HoldStats:
    """Opens ``streams`` streams (one connection each) over ``ramp_s`` and samples memory while
    they are open. A stream counts as open from its first chunk to its end."""
    stats = StreamStats()
    payload = encode(request)
    state = {"open": 0, "max_open": 0}
    baseline = rss_mb()
    peak: tuple[int, float, dict[str, float]] = (0, sum(baseline.values()), baseline)

    def opened() -> None:
        state["open"] += 1
        state["max_open"] = max(state["max_open"], state["open"])

    async def one(index: int) -> None:
        await asyncio.sleep(index * ramp_s / streams)
        conn = None
        counted = False

        def first() -> None:
            nonlocal counted
            counted = True
            opened()

        try:
            conn = await _connect(request)
            outcome, _ = await asyncio.wait_for(one_stream(conn, payload, done_marker, first), timeout_s)
            stats.add(outcome)
        except FAILURES as exc:
            stats.fail(_kind(exc))
        finally:
            if counted:
                state["open"] -= 1
            _close(conn)

    async def sampler() -> None:
        nonlocal peak
        while True:
            await asyncio.sleep(0.2)
            now_open, rss = state["open"], rss_mb()
            if (now_open, sum(rss.values())) > peak[:2]:
                peak = (now_open, sum(rss.values()), rss)

    started = time.perf_counter()
    watcher = asyncio.ensure_future(sampler())
    try:
        await asyncio.gather(*(one(i) for i in range(streams)))
    finally:
        watcher.cancel()
    stats.duration_s = time.perf_counter() - started
    return HoldStats(streams, stats, state["max_open"], baseline, peak[2], peak[0])
