"""One measured run: a load against one system, with the CPU and memory of every process behind it.

The same request, settings and measurement wrap every system, so rows of the table differ only
in what sits between the client and the simulated provider.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from bench import streams, uploads, wrk
from bench.procstat import Meter, Usage, children_cpu_seconds, own_cpu_seconds
from bench.wrk import Request

T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    """A system under test: what to send it and which processes do the work."""

    system: str
    chat: Request
    stream: Request
    done_marker: bytes
    roles: dict[str, list[int]]


@dataclass
class Result:
    system: str
    mode: str  # "chat" (non-streamed, wrk) or "stream" (SSE, the asyncio client)
    concurrency: int
    duration_s: float
    ok: int
    errors: int
    error_detail: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None
    cpu_ms_per_req: dict[str, float]
    peak_rss_mb: dict[str, float]
    ttfc_p50_ms: float | None = None
    ttfc_p99_ms: float | None = None
    chunks: int | None = None
    cpu_us_per_chunk: dict[str, float] = field(default_factory=dict)
    peak_is_lifetime: bool = False  # the high-water mark could not be reset: peak since process start
    upload_mb: float | None = None  # upload rows: the file's size (MB, 10^6 bytes)

    @property
    def id(self) -> str:
        return f"{self.system}.{self.mode}.c{self.concurrency}"

    @property
    def rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0

    @property
    def chunks_per_s(self) -> float | None:
        return self.chunks / self.duration_s if self.chunks is not None and self.duration_s else None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "system": self.system,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "duration_s": round(self.duration_s, 3),
            "requests": self.ok,
            "rps": round(self.rps, 1),
            "errors": self.errors,
            "error_detail": self.error_detail,
            "p50_ms": _r(self.p50_ms),
            "p99_ms": _r(self.p99_ms),
            "cpu_ms_per_req": {k: _r(v) for k, v in self.cpu_ms_per_req.items()},
            "peak_rss_mb": {k: round(v, 1) for k, v in self.peak_rss_mb.items()},
            "ttfc_p50_ms": _r(self.ttfc_p50_ms),
            "ttfc_p99_ms": _r(self.ttfc_p99_ms),
            "chunks": self.chunks,
            "chunks_per_s": _r(self.chunks_per_s, 1),
            "chunks_per_stream": round(self.chunks / self.ok, 1) if self.chunks and self.ok else None,
            "cpu_us_per_chunk": {k: _r(v, 1) for k, v in self.cpu_us_per_chunk.items()},
            "upload_mb": self.upload_mb,
            "cpu_ms_per_mb": {k: _r(v) for k, v in self.cpu_ms_per_mb.items()},
        }

    @property
    def cpu_ms_per_mb(self) -> dict[str, float]:
        """Upload rows: each process's CPU per MB uploaded."""
        if not self.upload_mb:
            return {}
        return {role: ms / self.upload_mb for role, ms in self.cpu_ms_per_req.items()}


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (as wrk reports), None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _per(usage: dict[str, Usage], count: int, scale: float) -> dict[str, float]:
    return {role: u.cpu_s * scale / count for role, u in usage.items()} if count else {}


def run_chat(
    target: Target, concurrency: int, duration_s: float, warmup_s: float, work_dir: Path, wrk_bin: str
) -> Result:
    script = wrk.write_script(target.chat, work_dir / "lua" / f"{target.system}.lua")
    if warmup_s > 0:
        wrk.run(target.chat, script, connections=concurrency, duration_s=warmup_s, wrk=wrk_bin)
    meter = Meter(target.roles)
    meter.start()
    loadgen0 = children_cpu_seconds()
    res = wrk.run(target.chat, script, connections=concurrency, duration_s=duration_s, wrk=wrk_bin)
    usage = meter.stop()
    usage["loadgen"] = Usage(children_cpu_seconds() - loadgen0, 0.0)
    ok = res.requests - res.error_detail.get("status", 0)
    return Result(
        target.system,
        "chat",
        concurrency,
        res.duration_s,
        ok,
        res.errors,
        res.error_detail,
        res.p50_ms,
        res.p99_ms,
        _per(usage, ok, 1e3),
        {role: u.peak_rss_mb for role, u in usage.items() if role != "loadgen"},
        peak_is_lifetime=meter.peak_is_lifetime,
    )


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Runs the client on uvloop: less client CPU per chunk than the default loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def run_stream(
    target: Target, concurrency: int, duration_s: float, warmup_s: float, timeout_s: float
) -> Result:
    def load(seconds: float) -> streams.StreamStats:
        return run_loop(
            streams.load(
                target.stream,
                concurrency=concurrency,
                duration_s=seconds,
                done_marker=target.done_marker,
                timeout_s=timeout_s,
            )
        )

    if warmup_s > 0:
        load(warmup_s)
    meter = Meter(target.roles)
    meter.start()
    client0 = own_cpu_seconds()
    stats = load(duration_s)
    usage = meter.stop()
    usage["loadgen"] = Usage(own_cpu_seconds() - client0, 0.0)
    errors = sum(stats.errors.values())
    return Result(
        target.system,
        "stream",
        concurrency,
        stats.duration_s,
        stats.ok,
        errors,
        dict(stats.errors),
        _ms(percentile(stats.total_s, 50)),
        _ms(percentile(stats.total_s, 99)),
        _per(usage, stats.ok, 1e3),
        {role: u.peak_rss_mb for role, u in usage.items() if role != "loadgen"},
        ttfc_p50_ms=_ms(percentile(stats.ttfc_s, 50)),
        ttfc_p99_ms=_ms(percentile(stats.ttfc_s, 99)),
        chunks=stats.chunks,
        cpu_us_per_chunk=_per(usage, stats.chunks, 1e6),
        peak_is_lifetime=meter.peak_is_lifetime,
    )


def run_upload(
    system: str,
    upload: uploads.Upload,
    roles: dict[str, list[int]],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    timeout_s: float,
) -> Result:
    """Uploads of one file size: ``cpu_ms_per_req`` is per upload (the report divides by its MB)."""
    if warmup_s > 0:
        run_loop(uploads.load(upload, concurrency, warmup_s, timeout_s))
    meter = Meter(roles)
    meter.start()
    client0 = own_cpu_seconds()
    stats = run_loop(uploads.load(upload, concurrency, duration_s, timeout_s))
    usage = meter.stop()
    usage["loadgen"] = Usage(own_cpu_seconds() - client0, 0.0)
    return Result(
        system,
        "upload",
        concurrency,
        stats.duration_s,
        stats.ok,
        sum(stats.errors.values()),
        dict(stats.errors),
        _ms(percentile(stats.total_s, 50)),
        _ms(percentile(stats.total_s, 99)),
        _per(usage, stats.ok, 1e3),
        {role: u.peak_rss_mb for role, u in usage.items() if role != "loadgen"},
        peak_is_lifetime=meter.peak_is_lifetime,
        upload_mb=upload.file_bytes / 1e6,
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000
