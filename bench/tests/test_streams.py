"""The stream client against a tiny local HTTP/1.1 server: framing, chunk counting, failures."""

from __future__ import annotations

import asyncio

from bench import streams
from bench.tests.local_server import ServerFactory, chunked
from bench.wrk import Request

OPENAI_EVENTS = [b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'] * 5 + [b"data: [DONE]\n\n"]


def request(port: int) -> Request:
    return Request("127.0.0.1", port, "/v1/chat/completions", {"content-type": "application/json"}, b"{}")


def sse_response(body: bytes, status: int = 200) -> bytes:
    # Events split at arbitrary byte positions: the counter must reassemble them.
    parts = [body[i : i + 7] for i in range(0, len(body), 7)]
    return f"HTTP/1.1 {status} OK\r\ntransfer-encoding: chunked\r\n\r\n".encode() + chunked(parts)


def test_counter_counts_events_not_reads() -> None:
    counter = streams.SseCounter(b"[DONE]", 0.0)
    data = b"".join(OPENAI_EVENTS)
    for i in range(0, len(data), 3):
        counter.feed(data[i : i + 3])
    assert counter.chunks == 5 and counter.done and counter.error is None


def test_counter_flags_an_error_event() -> None:
    counter = streams.SseCounter(b"[DONE]", 0.0)
    counter.feed(b'data: {"error": {"code": "upstream_error"}}\n\ndata: [DONE]\n\n')
    assert counter.error == "error_event"


async def test_load_reuses_connections_and_counts_chunks(server_factory: ServerFactory) -> None:
    port = await server_factory(lambda n: sse_response(b"".join(OPENAI_EVENTS)))
    stats = await streams.load(
        request(port), concurrency=2, duration_s=0.2, done_marker=b"[DONE]", timeout_s=5
    )
    assert stats.ok > 2 and not stats.errors
    assert stats.chunks == 5 * stats.ok
    assert all(t <= total for t, total in zip(stats.ttfc_s, stats.total_s, strict=True))


async def test_truncated_streams_and_http_errors_are_failures(server_factory: ServerFactory) -> None:
    truncated = await server_factory(lambda n: sse_response(b"".join(OPENAI_EVENTS[:-1])))
    stats = await streams.load(
        request(truncated), concurrency=1, duration_s=0.1, done_marker=b"[DONE]", timeout_s=5
    )
    assert stats.ok == 0 and stats.errors["truncated"] > 0

    failing = await server_factory(lambda n: b"HTTP/1.1 503 No\r\ncontent-length: 2\r\n\r\n{}")
    stats = await streams.load(
        request(failing), concurrency=1, duration_s=0.1, done_marker=b"[DONE]", timeout_s=5
    )
    assert stats.ok == 0 and stats.errors["http_503"] > 0


async def test_hold_counts_streams_open_together() -> None:
    release = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        writer.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunked([OPENAI_EVENTS[0]])[:-5]
        )
        await writer.drain()
        await release.wait()
        writer.write(chunked([OPENAI_EVENTS[-1]]))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    loop.call_later(0.5, release.set)
    try:
        result = await streams.hold(
            request(port),
            streams=20,
            ramp_s=0.1,
            done_marker=b"[DONE]",
            timeout_s=5,
            rss_mb=lambda: {"proxy": 1.0},
        )
    finally:
        server.close()
        await server.wait_closed()
    assert result.max_open == 20 and result.stats.ok == 20 and not result.stats.errors
