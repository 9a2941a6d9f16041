"""ext_proc/grpcio_server.py: the grpc.aio fallback behaves as ext_proc's own HTTP/2 server does.

Every case runs against both servers (``h2``: ext_proc.h2_grpc.Server, ``grpcio``: the
fallback) with the same method table, through a real grpcio client: what one answers, the
other must answer too — messages, statuses, the TCP token, the public health check, the
Unix socket rules.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from ext_proc import grpcio_server, h2_grpc, health
from ext_proc.h2_grpc import Method

ECHO, FAIL, METADATA = "/t.T/Echo", "/t.T/Fail", "/t.T/Metadata"
TOKEN = b"s3cret-token"
SERVERS = {"h2": h2_grpc.Server, "grpcio": grpcio_server.Server}


def identity(data: bytes) -> bytes:
    return data


class Table:
    """A method table whose handlers record what they were given."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.configured = True

    def methods(self) -> dict[str, Method]:
        async def echo(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            async for message in requests:
                self.seen.append(message)
                yield message

        async def fail(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            async for message in requests:
                yield message
                raise ValueError("boom")

        async def metadata(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            async for _ in requests:  # the call's own metadata, as each server hands it over
                for name, value in h2_grpc.CALL_METADATA.get():
                    key = name.decode() if isinstance(name, bytes) else name
                    if key == "traceparent":
                        yield value.encode() if isinstance(value, str) else value

        return {
            ECHO: Method(echo, identity, identity),  # type: ignore[arg-type]
            METADATA: Method(metadata, identity, identity),  # type: ignore[arg-type]
            FAIL: Method(fail, identity, identity),  # type: ignore[arg-type]
            **health.methods(lambda: self.configured),
        }


@pytest.fixture(params=sorted(SERVERS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def call(
    target: str, path: str, messages: list[bytes] | None, token: bytes | None = None
) -> tuple[grpc.StatusCode, str, list[bytes]]:
    """The call's status, details and replies. ``messages=None`` opens the call without writing:
    a write racing a refusal makes grpcio's client report its own INTERNAL instead of the server's
    status (a client race, whichever server refuses; tests/ext_proc/h2_grpc/test_h2_grpc_server.py)."""
    metadata: tuple[tuple[str, str], ...] = (
        (("x-infery-ext-proc-token", token.decode()),) if token is not None else ()
    )
    if path == METADATA:
        metadata += (("traceparent", TRACEPARENT),)
    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = channel.stream_stream(path, request_serializer=identity, response_deserializer=identity)
        if messages is None:
            answer = stub(metadata=metadata, timeout=10)
            return await answer.code(), await answer.details() or "", []
        answer = stub(iter(messages), metadata=metadata, timeout=10)
        replies = []
        try:
            async for reply in answer:
                replies.append(reply)
        except grpc.aio.AioRpcError:
            pass
        return await answer.code(), await answer.details() or "", replies


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_a_handler_reads_its_own_calls_metadata(kind: str) -> None:
    """Where ext_proc finds Envoy's trace context (ext_proc/tracing.py), on both servers."""
    server = SERVERS[kind](Table().methods())
    port = await server.start("127.0.0.1", 0, token=TOKEN)
    try:
        code, _, replies = await call(f"127.0.0.1:{port}", METADATA, [b"a"], TOKEN)
        assert (code, replies) == (grpc.StatusCode.OK, [TRACEPARENT.encode()])
    finally:
        await server.stop(grace=1)


async def check_health(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        check = channel.unary_unary(
            health.CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        return int((await asyncio.wait_for(check(health_pb2.HealthCheckRequest()), 5)).status)


async def test_tcp_needs_the_token_and_the_unix_socket_does_not(kind: str, tmp_path: Path) -> None:
    table = Table()
    server = SERVERS[kind](table.methods())
    port = await server.start("127.0.0.1", 0, token=TOKEN)
    path = str(tmp_path / "ext_proc.sock")
    await server.start_unix(path)
    tcp = f"127.0.0.1:{port}"
    try:
        for token in (None, b"s3cret-tokeN", b""):
            code, details, replies = await call(tcp, ECHO, None, token)
            assert (code, details, replies) == (
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong ext_proc token",
                [],
            )
        assert table.seen == []  # refused before any handler ran
        sizes = [0, 1, 5 << 20]
        messages = [bytes([i]) * size for i, size in enumerate(sizes)]
        assert await call(tcp, ECHO, messages, TOKEN) == (grpc.StatusCode.OK, "", messages)
        assert await call(f"unix:{path}", ECHO, [b"uds"]) == (grpc.StatusCode.OK, "", [b"uds"])
        # Envoy's health checker cannot send the token: the one public method, on both listeners.
        for target in (tcp, f"unix:{path}"):
            assert await check_health(target) == health_pb2.HealthCheckResponse.SERVING
        table.configured = False
        assert await check_health(tcp) == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(ValueError, match="empty token"):
            await server.start("127.0.0.1", 0, token=b"")
    finally:
        await server.stop(grace=1)


@pytest.mark.parametrize(
    ("path", "code", "details", "replies"),
    [
        ("/no.Such/Method", grpc.StatusCode.UNIMPLEMENTED, None, None),
        (FAIL, grpc.StatusCode.INTERNAL, "ValueError", [b"x"]),
    ],
    ids=["unknown-method", "handler-raises-after-a-reply"],
)
async def test_errors_end_the_call_with_the_same_status(
    kind: str, path: str, code: grpc.StatusCode, details: str | None, replies: list[bytes] | None
) -> None:
    server = SERVERS[kind](Table().methods())
    port = await server.start("127.0.0.1", 0)
    try:
        got_code, got_details, got_replies = await call(f"127.0.0.1:{port}", path, replies)
        assert (got_code, got_replies) == (code, replies or [])
        if details is not None:  # grpc words its own UNIMPLEMENTED differently; the code is the contract
            assert got_details == details
    finally:
        await server.stop(grace=1)


async def test_a_message_over_the_limit_is_resource_exhausted(kind: str) -> None:
    server = SERVERS[kind](Table().methods(), max_message=1000)
    port = await server.start("127.0.0.1", 0)
    try:
        code, _, replies = await call(f"127.0.0.1:{port}", ECHO, [b"x" * 1001])
        assert (code, replies) == (grpc.StatusCode.RESOURCE_EXHAUSTED, [])
        assert (await call(f"127.0.0.1:{port}", ECHO, [b"x" * 1000]))[2] == [b"x" * 1000]
    finally:
        await server.stop(grace=1)


async def test_a_live_socket_is_never_taken_over(kind: str, tmp_path: Path) -> None:
    path = str(tmp_path / "ext_proc.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # a file left behind by a dead process: replaced
    stale.close()
    first, second = SERVERS[kind](Table().methods()), SERVERS[kind](Table().methods())
    await first.start_unix(path)
    try:
        with pytest.raises(OSError, match="another process is listening"):
            await second.start_unix(path)
        assert await call(f"unix:{path}", ECHO, [b"still first"]) == (
            grpc.StatusCode.OK,
            "",
            [b"still first"],
        )
    finally:
        await first.stop(grace=1)
        await second.stop(grace=1)


async def test_stop_lets_an_open_call_finish(kind: str) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for message in requests:
            arrived.set()
            await release.wait()
            yield message

    server = SERVERS[kind]({"/t.T/Slow": Method(slow, identity, identity)})  # type: ignore[arg-type]
    port = await server.start("127.0.0.1", 0)
    answer = asyncio.ensure_future(call(f"127.0.0.1:{port}", "/t.T/Slow", [b"in flight"]))
    await asyncio.wait_for(arrived.wait(), 5)
    stopping = asyncio.ensure_future(server.stop(grace=5))
    await asyncio.sleep(0.1)
    assert not stopping.done()
    release.set()
    assert await answer == (grpc.StatusCode.OK, "", [b"in flight"])
    await asyncio.wait_for(stopping, 5)
