"""bench/body_sizes.py drives one ext_proc connection in process with prompts of a given size."""

from __future__ import annotations

import asyncio

from bench.body_sizes import chat_body, measure


def test_a_request_body_of_the_size_asked() -> None:
    for size in (1024, 100 * 1024, 1024 * 1024):
        assert abs(len(chat_body(size)) - size) <= 2


def test_every_request_is_answered_with_its_body_and_its_cost_counted() -> None:
    # measure() raises unless the request body's reply carried the rewritten body whole.
    result = asyncio.run(measure(200 * 1024, requests=3))
    assert result.requests == 3
    assert result.cpu_ms > 0 and result.minor_faults >= 0 and result.peak_mb >= 0
