"""Measures, from inside ext_proc, how long its event loop could not run a request.

A request stalls when the loop is busy (our code, or the garbage collector, on the loop's
thread) or when the loop's thread is not running at all (waiting for a CPU on a loaded
machine, or for the GIL held by one of gRPC's threads). Wall-clock percentiles seen by a
client cannot tell these apart; this does, with counts:

- a timer due every ``period`` seconds measures its own lateness: the longest time the
  loop could not run anything;
- over each late interval it reads the loop thread's CPU time (``time.thread_time``) and
  the time the kernel kept it waiting for a CPU (``/proc/thread-self/schedstat``), and
  every garbage collection is timed (``gc.callbacks``): a stall is split into CPU on the
  loop (of which GC), waiting for a CPU, and the rest (blocked: the GIL, a page fault).

Each stall longer than ``report_ms`` is logged with that split; :attr:`stats` keeps
counts and maxima for the bench and the tests. Off unless ``INFERY_LOOP_WATCH_MS`` asks
(``make bench-scale`` does): a timer every 5 ms and two clock reads per collection cost
little, but not nothing, on the hot path.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("infery.ext_proc.loop")

PERIOD_S = 0.005
REPORT_MS = 10.0


@dataclass(slots=True)
class LoopStats:
    ticks: int = 0
    max_late_ms: float = 0.0
    stalls: int = 0  # late by more than report_ms
    gc_runs: list[int] = field(default_factory=lambda: [0, 0, 0])
    gc_max_ms: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # CPU, per generation


_SCHEDSTAT: dict[int, int] = {}  # thread id -> its open /proc/thread-self/schedstat


def cpu_wait_clock() -> Callable[[], float]:
    """A clock of the calling thread's time spent waiting for a CPU (seconds; 0 without /proc)."""
    fd = _SCHEDSTAT.get(threading.get_ident())
    if fd is None:
        try:
            fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            return lambda: 0.0
        _SCHEDSTAT[threading.get_ident()] = fd

    def read() -> float:
        # "<on-CPU ns> <waiting on a run queue ns> <timeslices>"
        return int(os.pread(fd, 64, 0).split()[1]) / 1e9

    return read


class LoopWatch:
    def __init__(self, period: float = PERIOD_S, report_ms: float = REPORT_MS) -> None:
        self.period = period
        self.report_ms = report_ms
        self.stats = LoopStats()
        self._gc_started = self._gc_cpu_started = 0.0
        self._gc_since = 0.0  # CPU seconds of garbage collection since the last tick
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waited = lambda: 0.0
        self._due = self._cpu = self._runq = 0.0

    def start(self) -> None:
        """Start watching the running loop (from its thread: schedstat is per thread)."""
        self._loop = asyncio.get_running_loop()
        self._waited = cpu_wait_clock()
        gc.callbacks.append(self._on_gc)
        self._arm()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _arm(self) -> None:
        assert self._loop is not None
        # The clocks that are system calls first: the kernel may switch threads on a system
        # call's return, and that wait must fall inside the window of both readings.
        self._runq, self._cpu, self._gc_since = self._waited(), time.thread_time(), 0.0
        self._due = time.perf_counter() + self.period
        self._handle = self._loop.call_later(self.period, self._tick)

    def _tick(self) -> None:
        late_ms = (time.perf_counter() - self._due) * 1000
        s = self.stats
        s.ticks += 1
        if late_ms > s.max_late_ms:
            s.max_late_ms = late_ms
        if late_ms > self.report_ms:
            s.stalls += 1
            cpu_ms = (time.thread_time() - self._cpu) * 1000
            runq_ms = (self._waited() - self._runq) * 1000
            log.warning(
                "event loop stalled %.1f ms: %.1f ms CPU on the loop (%.1f ms GC), %.1f ms waiting for a CPU",
                late_ms,
                cpu_ms,
                self._gc_since * 1000,
                runq_ms,
            )
        self._arm()

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started, self._gc_cpu_started = time.perf_counter(), time.thread_time()
            return
        took_ms = (time.perf_counter() - self._gc_started) * 1000
        cpu_ms = (time.thread_time() - self._gc_cpu_started) * 1000
        self._gc_since += cpu_ms / 1000
        generation = info["generation"]
        s = self.stats
        s.gc_runs[generation] += 1
        if cpu_ms > s.gc_max_ms[generation]:
            s.gc_max_ms[generation] = cpu_ms
        if took_ms > self.report_ms / 2:
            log.warning(
                "garbage collection of generation %d took %.1f ms (%.1f ms CPU)", generation, took_ms, cpu_ms
            )
