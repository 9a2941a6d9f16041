"""The upload client against a tiny local HTTP/1.1 server: the whole form sent, answers framed either
way, failures counted, the identity asked for per upload."""

from __future__ import annotations

import asyncio
import itertools

from bench import uploads
from bench.tests.local_server import ServerFactory, chunked


def test_the_form_carries_the_file_and_purpose() -> None:
    content_type, body = uploads.form(1000)
    boundary = content_type.split("boundary=")[1].encode()
    assert body.count(b"--" + boundary) == 3 and body.endswith(b"--" + boundary + b"--\r\n")
    assert b'name="purpose"\r\n\r\nuser_data\r\n' in body and b'filename="bench.bin"' in body
    assert 1000 < len(body) < 1300


async def test_uploads_are_counted_with_their_bytes_and_errors(server_factory: ServerFactory) -> None:
    answers = itertools.cycle(
        [
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunked([b"{", b"}"]),
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n",
        ]
    )
    port = await server_factory(lambda n: next(answers))
    signed = itertools.count()
    content_type, body = uploads.form(20_000)

    def headers() -> dict[str, str]:
        return {"x-identity": str(next(signed))}

    upload = uploads.Upload("127.0.0.1", port, "/v1/files", 20_000, content_type, body, headers)
    stats = await uploads.load(upload, concurrency=2, duration_s=0.3, timeout_s=5)
    total = stats.ok + stats.errors["status 413"]
    assert (
        stats.ok >= 2
        and stats.errors["status 413"] >= 1
        and sum(stats.errors.values()) == stats.errors["status 413"]
    )
    assert stats.bytes == stats.ok * 20_000 and len(stats.total_s) == stats.ok
    assert next(signed) == total  # a fresh identity for every upload


async def test_a_refused_connection_is_an_error_not_a_hang() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    upload = uploads.Upload("127.0.0.1", port, "/v1/files", 1, *uploads.form(1), lambda: {})
    stats = await uploads.load(upload, concurrency=1, duration_s=0.2, timeout_s=1)
    assert stats.ok == 0 and stats.errors["ConnectionRefusedError"] >= 1
