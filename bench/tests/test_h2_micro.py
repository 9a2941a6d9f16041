"""bench/h2_micro.py drives ext_proc's HTTP/2 server in process and counts its CPU per message."""

from __future__ import annotations

import asyncio

from bench.h2_micro import MESSAGES_PER_STREAM, measure


def test_every_stream_is_served_and_its_cpu_counted() -> None:
    result = asyncio.run(measure(streams=64, concurrency=16, message_size=100))
    assert (result.streams, result.messages) == (64, 64 * MESSAGES_PER_STREAM)
    assert 0 < result.us_per_message < 10_000
