"""The event-loop watch tells a stall's causes apart: our own CPU on the loop, or the thread
not running at all (here: blocked in a sleep; on a loaded machine: waiting for a CPU)."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import pytest

from ext_proc.loop_watch import LoopWatch

STALL = re.compile(r"stalled ([\d.]+) ms: ([\d.]+) ms CPU on the loop")


def _burn(ms: float) -> None:
    until = time.thread_time() + ms / 1000
    while time.thread_time() < until:
        pass


async def _stall(caplog: pytest.LogCaptureFixture, block: object) -> tuple[float, float]:
    watch = LoopWatch(period=0.005, report_ms=15)
    caplog.clear()
    watch.start()
    try:
        await asyncio.sleep(0.02)
        block()  # type: ignore[operator]
        await asyncio.sleep(0.02)
    finally:
        watch.stop()
    (found,) = [STALL.search(r.message) for r in caplog.records if "stalled" in r.message]
    assert found is not None
    assert watch.stats.stalls == 1 and watch.stats.max_late_ms >= 15
    return float(found[1]), float(found[2])


async def test_a_stall_of_our_own_is_cpu_on_the_loop_and_a_blocked_thread_is_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="infery.ext_proc.loop")
    late, cpu = await _stall(caplog, lambda: _burn(40))
    assert late >= 30 and cpu >= 35
    late, cpu = await _stall(caplog, lambda: time.sleep(0.04))
    assert late >= 30 and cpu < 10
