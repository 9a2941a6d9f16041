"""ext_proc/h2_grpc/ against two independent clients.

``grpcio`` proves interop with a real gRPC implementation (sizes, concurrency,
statuses). The ``h2`` library, with frames built by hand where h2 will not
produce them, covers the frame-level cases: PING, CONTINUATION, padding, flow
control against a tiny window, RST_STREAM, client trailers, bad input and the
graceful stop. Every server listens on a free port and is stopped by the test.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import h2.events
import hpack
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from ext_proc.h2_grpc import Limits, Method, Server
from tests.ext_proc.h2_grpc.peers import (
    ECHO,
    FAIL_AT_ONCE,
    FAIL_LATER,
    FIRST_ONLY,
    HANDLERS,
    MIB,
    RawFrames,
    acks,
    after_preface,
    echo,
    grpc_channel,
    grpc_frame,
    grpc_method,
    grpc_unframe,
    h2_client,
    identity,
    path_literal,
    payload,
    request_headers,
    serving,
    split_header_block,
)

# ---------------------------------------------------------------------------- grpcio


@pytest.mark.parametrize(
    "sizes",
    [[0], [1], [0, 1, 0], [5 * MIB], [3 * MIB, 1, 0, 3 * MIB]],
    ids=["empty", "one-byte", "empty-one-empty", "5MiB", "3MiB-1-0-3MiB"],
)
async def test_grpc_echo_round_trip(sizes: list[int]) -> None:
    """MiB messages span many frames both ways and exceed grpcio's receive window, so the server
    must stop and resume on its WINDOW_UPDATEs (the server's own windows are opened fully)."""
    messages = [payload(size, seed) for seed, size in enumerate(sizes)]
    async with serving() as running, grpc_channel(running) as channel:
        call = grpc_method(channel, ECHO)(iter(messages), timeout=10)
        assert [m async for m in call] == messages
        assert await call.code() == grpc.StatusCode.OK


def _in_pieces(message: bytes) -> list[bytes]:
    """A serializer answering in pieces, as a reply with a large body kept aside does
    (ext_proc/envoy_messages.py ``Spliced``), an empty one among them."""
    third = len(message) // 3
    return [message[:third], b"", message[third : 2 * third], message[2 * third :]]


@pytest.mark.parametrize("sizes", [[0], [3 * MIB + 1], [1, 3 * MIB, 0]], ids=["empty", "3MiB", "1-3MiB-0"])
async def test_a_reply_serialized_in_pieces_arrives_as_one_message(sizes: list[int]) -> None:
    messages = [payload(size, seed) for seed, size in enumerate(sizes)]
    server = Server({ECHO: Method(echo, identity, _in_pieces)})  # type: ignore[arg-type]
    port = await server.start("127.0.0.1", 0)
    try:
        options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            call = grpc_method(channel, ECHO)(iter(messages), timeout=10)
            assert [m async for m in call] == messages
            assert await call.code() == grpc.StatusCode.OK
    finally:
        await server.stop(grace=1)


async def test_grpc_echo_over_a_unix_socket(tmp_path: Path) -> None:
    """How Envoy reaches ext_proc when they share a host or pod."""
    path = str(tmp_path / "ext_proc.sock")
    server = Server({ECHO: Method(echo, identity, identity)})
    await server.start_unix(path)
    try:
        async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
            messages = [payload(size, seed) for seed, size in enumerate([1, 2 * MIB, 0])]
            call = grpc_method(channel, ECHO)(iter(messages), timeout=10)
            assert [m async for m in call] == messages
            assert await call.code() == grpc.StatusCode.OK
    finally:
        await server.stop(grace=1)


async def test_a_tcp_listener_with_a_token_serves_only_streams_that_carry_it(tmp_path: Path) -> None:
    """ext_proc on TCP: a stream without the token (or with a wrong one) ends UNAUTHENTICATED before
    any handler runs; the same server's Unix socket needs none (its directory guards it)."""
    ran: list[bytes] = []

    async def record(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for message in requests:
            ran.append(message)
            yield message

    server = Server({ECHO: Method(record, identity, identity)})
    port = await server.start("127.0.0.1", 0, token=b"s3cret-token")
    path = str(tmp_path / "ext_proc.sock")
    await server.start_unix(path)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for metadata in (
                (),
                (("x-infery-ext-proc-token", "s3cret-tokeN"),),
                (("x-infery-ext-proc-token", ""),),
            ):
                call = grpc_method(channel, ECHO)(metadata=metadata, timeout=10)
                assert await call.code() == grpc.StatusCode.UNAUTHENTICATED  # at once: nothing written
            assert ran == []
            good = grpc_method(channel, ECHO)(
                iter([b"hi"]), metadata=(("x-infery-ext-proc-token", "s3cret-token"),)
            )
            assert [m async for m in good] == [b"hi"] and ran == [b"hi"]
            # The same connection, after a stream that carried the token: still checked per stream.
            call = grpc_method(channel, ECHO)(metadata=(("x-infery-ext-proc-token", "nope"),), timeout=10)
            assert await call.code() == grpc.StatusCode.UNAUTHENTICATED and ran == [b"hi"]
        async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
            assert [m async for m in grpc_method(channel, ECHO)(iter([b"uds"]), timeout=10)] == [b"uds"]
        with pytest.raises(ValueError):
            await server.start("127.0.0.1", 0, token=b"")
    finally:
        await server.stop(grace=1)


async def test_grpc_many_streams_interleave_on_one_connection() -> None:
    streams, rounds = 50, 5
    open_now = 0
    all_open = asyncio.Event()

    async def barrier_echo(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Holds every stream's first reply until all are open: they cannot run one after another."""
        nonlocal open_now
        open_now += 1
        if open_now == streams:
            all_open.set()
        await all_open.wait()
        async for message in requests:
            yield message

    async def converse(call: grpc.aio.StreamStreamCall, i: int) -> grpc.StatusCode:
        for j in range(rounds):
            message = f"{i}:{j}".encode()
            await call.write(message)
            assert await call.read() == message
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        return await call.code()

    async with serving(Barrier=barrier_echo) as running, grpc_channel(running) as channel:
        method = grpc_method(channel, "/t.T/Barrier")
        codes = await asyncio.wait_for(asyncio.gather(*(converse(method(), i) for i in range(streams))), 10)
    assert codes == [grpc.StatusCode.OK] * streams


@pytest.mark.parametrize(
    ("path", "code", "replies", "details"),
    [
        ("/no.Such/Method", grpc.StatusCode.UNIMPLEMENTED, [], "unknown method /no.Such/Method"),
        (FAIL_AT_ONCE, grpc.StatusCode.INTERNAL, [], "ValueError"),
        (FAIL_LATER, grpc.StatusCode.INTERNAL, [b"x"], "KeyError"),
    ],
    ids=["unknown-method", "handler-raises", "handler-raises-after-a-reply"],
)
async def test_grpc_error_statuses(
    path: str, code: grpc.StatusCode, replies: list[bytes], details: str
) -> None:
    async with serving() as running, grpc_channel(running) as channel:
        call = grpc_method(channel, path)(timeout=10)
        if path in HANDLERS:
            # Not to an unknown method: a write racing the refusal makes grpc.aio's client report
            # INTERNAL ("Internal error from Core"), against a grpc.aio server too. Nor a half-close.
            await call.write(b"x")
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async for message in call:
                received.append(message)
        assert (error.value.code(), received, error.value.details()) == (code, replies, details)
        # The connection is still good for the next call.
        assert [m async for m in grpc_method(channel, ECHO)(iter([b"after"]))] == [b"after"]


async def test_a_handler_cancelled_from_inside_ends_with_internal() -> None:
    """Not a reset: something the handler awaited was cancelled. The call still gets a status."""

    async def awaits_a_cancelled_task(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for message in requests:
            task = asyncio.ensure_future(asyncio.sleep(3600))
            task.cancel()
            await task
            yield message

    async with serving(Cancelled=awaits_a_cancelled_task) as running, grpc_channel(running) as channel:
        call = grpc_method(channel, "/t.T/Cancelled")(timeout=10)
        await call.write(b"x")
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call.read()
        assert (error.value.code(), error.value.details()) == (grpc.StatusCode.INTERNAL, "CancelledError")
        assert [m async for m in grpc_method(channel, ECHO)(iter([b"after"]))] == [b"after"]


async def test_a_second_server_cannot_take_a_live_socket(tmp_path: Path) -> None:
    """A stale socket file is replaced; a live one belongs to its process."""
    path = str(tmp_path / "ext_proc.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    first, second = Server({ECHO: Method(echo, identity, identity)}), Server({})
    await first.start_unix(path)
    try:
        with pytest.raises(OSError, match="another process is listening"):
            await second.start_unix(path)
        async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
            assert [m async for m in grpc_method(channel, ECHO)(iter([b"still first"]))] == [b"still first"]
    finally:
        await first.stop(grace=1)


async def test_grpc_server_ends_before_the_client() -> None:
    written = asyncio.Event()

    async def first_then_end(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        first = await anext(requests)
        # Both writes are out before the call ends: a write racing the end makes grpc.aio's
        # client report INTERNAL (a client race; this server only answers faster than grpc.aio's).
        await written.wait()
        yield b"got " + first

    async with serving(FirstThenEnd=first_then_end) as running, grpc_channel(running) as channel:
        call = grpc_method(channel, "/t.T/FirstThenEnd")(timeout=10)
        await call.write(b"a")
        await call.write(b"b")  # never read by the handler
        written.set()
        assert await call.read() == b"got a"
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
        assert [m async for m in grpc_method(channel, ECHO)(iter([b"next"]))] == [b"next"]


async def test_ping_is_acked_with_its_payload_and_an_ack_is_not() -> None:
    async with serving() as running, h2_client(running) as client:
        await client.send(PingFrame(0, b"unasked!", flags=["ACK"]).serialize())  # must get no answer
        sent = [b"12345678", b"\x00\xff" * 4]
        for count, opaque in enumerate(sent, 1):
            client.conn.ping(opaque)
            await client.send()
            await client.until(lambda n=count: len(acks(client)) >= n)
        await client.settle()
        assert acks(client) == sent


@pytest.mark.parametrize(
    ("pieces", "pad", "priority"),
    [(1, None, False), (2, None, False), (3, None, False), (10_000, None, False), (1, 7, True), (3, 0, True)],
    ids=[
        "headers-only",
        "headers+continuation",
        "headers+2-continuations",
        "one-byte-per-frame",
        "padded-with-priority",
        "padded-with-priority+continuations",
    ],
)
async def test_request_header_block_framings(pieces: int, pad: int | None, priority: bool) -> None:
    async with serving() as running, h2_client(running) as client:
        stream_id = client.conn.get_next_available_stream_id()
        client.conn.send_headers(stream_id, request_headers(ECHO))
        await client.send(split_header_block(client.conn.data_to_send(), pieces, pad=pad, priority=priority))
        client.conn.send_data(stream_id, grpc_frame(b"hello"), end_stream=True)
        await client.send()
        assert await client.response(stream_id) == ([b"hello"], {b"grpc-status": b"0"})
        assert await client.call(ECHO, [b"again"]) == [b"again"]  # HPACK state still in step


@pytest.mark.parametrize(
    ("chunks", "pad"),
    [
        ([grpc_frame(b"one")], 0),
        ([grpc_frame(b"one")], 255),
        ([grpc_frame(b"one") + grpc_frame(b"") + grpc_frame(b"two")], 3),
        (
            [
                grpc_frame(b"split across frames")[:2],
                grpc_frame(b"split across frames")[2:9],
                grpc_frame(b"split across frames")[9:],
            ],
            100,
        ),
        ([b"", grpc_frame(b"one"), b""], 1),
    ],
    ids=["pad-0", "pad-255", "three-messages-one-frame", "one-message-three-frames", "empty-padded-frames"],
)
async def test_padded_data_frames(chunks: list[bytes], pad: int) -> None:
    async with serving() as running, h2_client(running) as client:
        stream_id = client.request(ECHO, end=False)
        for chunk in chunks:
            client.conn.send_data(stream_id, chunk, pad_length=pad)
        client.conn.end_stream(stream_id)
        await client.send()
        replies, trailers = await client.response(stream_id)
        assert (replies, trailers) == (grpc_unframe(b"".join(chunks)), {b"grpc-status": b"0"})


async def test_response_waits_for_a_tiny_window_and_resumes_on_each_update() -> None:
    """The client's stream window starts at 10 bytes and its connection window at 65_535: the server
    sends exactly what each grants (h2 itself rejects any excess) and resumes on every update."""
    size = 100_000

    async def big(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        await anext(requests)
        yield payload(size)

    steps: list[tuple[str, int, int]] = [  # (window grown, by how much, bytes the client may now hold)
        ("none", 0, 10),
        ("stream", 990, 1_000),
        ("stream", 80_000, 65_535),  # now the connection window binds
        ("connection", 40_000, 81_000),
        ("SETTINGS_INITIAL_WINDOW_SIZE", 40_000 - 10, size + 5),  # raises the open stream's window too
    ]
    async with serving(Big=big) as running, h2_client(running, window=10, auto_ack=False) as client:
        stream_id = client.request("/t.T/Big", [b"go"])
        await client.send()
        for window, increment, expected in steps:
            if window == "stream":
                client.conn.increment_flow_control_window(increment, stream_id)
            elif window == "connection":
                client.conn.increment_flow_control_window(increment)
            elif window == "SETTINGS_INITIAL_WINDOW_SIZE":
                client.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 10 + increment})
            await client.send()
            await client.until(lambda e=expected: len(client.received(stream_id)) >= e)
            await client.settle()
            assert len(client.received(stream_id)) == expected, window
        assert await client.response(stream_id) == ([payload(size)], {b"grpc-status": b"0"})


async def test_only_streams_waiting_on_the_connection_window_queue_on_it() -> None:
    """A connection WINDOW_UPDATE (or SETTINGS) must not walk streams blocked on their own window:
    with thousands of them, tiny updates from a hostile peer would pin the event loop."""

    async def big(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        await anext(requests)
        yield payload(1_000)

    async with serving(Big=big) as running, h2_client(running, window=10, auto_ack=False) as client:
        streams = [client.request("/t.T/Big", [b"go"]) for _ in range(3)]
        await client.send()
        await client.until(lambda: all(len(client.received(s)) == 10 for s in streams))
        (connection,) = running.server._connections
        assert connection._blocked == {}  # each waits on its own window
        client.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 100_000})
        await client.send()
        for stream_id in streams:
            assert await client.response(stream_id) == ([payload(1_000)], {b"grpc-status": b"0"})


async def test_unread_input_is_held_back_by_the_windows() -> None:
    """Window goes back to the peer as the handler takes messages, not as they arrive: a peer can
    get one message (stream) or four (connection) ahead of a handler, never more."""
    gate = asyncio.Event()

    async def gated_echo(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        await gate.wait()
        async for message in requests:
            yield message

    async with serving(max_message=1000, Gated=gated_echo) as running, h2_client(running) as client:
        settings = client.conn.remote_settings
        assert (settings.initial_window_size, settings.max_concurrent_streams) == (1005, 16_384)
        messages = [payload(196, seed) for seed in range(5)]  # 5 x 201 framed bytes: the whole window
        stream_id = client.request("/t.T/Gated", messages, end=False)
        await client.send()
        await client.settle(0.2)
        assert client.conn.local_flow_control_window(stream_id) == 0  # nothing handed back yet
        gate.set()
        await client.until(lambda: client.conn.local_flow_control_window(stream_id) > 0)
        client.conn.send_data(stream_id, grpc_frame(b"more"), end_stream=True)
        await client.send()
        assert await client.response(stream_id) == ([*messages, b"more"], {b"grpc-status": b"0"})


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"\x00" + (1001).to_bytes(4, "big") + b"x" * 10, b"8", b"message larger than 1000 bytes"),
        (b"\x01" + (3).to_bytes(4, "big") + b"abc", b"12", b"compressed messages are not supported"),
        (b"\x00" + (10).to_bytes(4, "big") + b"abc", b"13", b"the request ended inside a message"),
    ],
    ids=["too-large", "compressed", "ends-inside-a-message"],
)
async def test_bad_messages_get_a_grpc_status(data: bytes, status: bytes, message: bytes) -> None:
    async with serving(max_message=1000) as running, h2_client(running) as client:
        stream_id = client.request(ECHO, end=False)
        client.conn.send_data(stream_id, data, end_stream=True)
        await client.send()
        await client.until(lambda: client.ended(stream_id))
        # Trailers-only: the status comes in the one HEADERS frame, with no message before it.
        (only,) = client.events(stream_id)[:-1]
        assert isinstance(only, h2.events.ResponseReceived)
        headers = dict(only.headers)
        assert (headers[b"grpc-status"], headers[b"grpc-message"]) == (status, message)
        assert await client.call(ECHO, [b"next"]) == [b"next"]


async def test_streams_over_the_limit_are_refused() -> None:
    release = asyncio.Event()

    async def held(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        await release.wait()
        async for message in requests:
            yield message

    encoder = hpack.Encoder()
    headers = [
        HeadersFrame(
            stream_id, encoder.encode(request_headers("/t.T/Held")), flags=["END_HEADERS"]
        ).serialize()
        for stream_id in (1, 3, 5)
    ]
    async with serving(limits=Limits(max_concurrent_streams=2), Held=held) as running:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        try:
            writer.write(after_preface(*headers))
            frames = RawFrames(reader)
            while not isinstance(frame := await frames.next(), RstStreamFrame):
                if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                    assert frame.settings[SettingCodes.MAX_CONCURRENT_STREAMS] == 2
            assert (frame.stream_id, frame.error_code) == (5, ErrorCodes.REFUSED_STREAM)
        finally:
            release.set()
            writer.close()


@pytest.mark.parametrize("half_closed", [False, True], ids=["waiting-for-a-request", "busy-after-half-close"])
async def test_rst_stream_cancels_the_handler_and_the_connection_goes_on(half_closed: bool) -> None:
    started, finished = asyncio.Event(), asyncio.Event()
    outcome: list[str] = []

    async def hang(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for message in requests:
                yield message
            started.set()
            await asyncio.sleep(3600)
            yield b"never"
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        finally:
            finished.set()

    async with serving(Hang=hang) as running, h2_client(running) as client:
        stream_id = client.request("/t.T/Hang", [b"a"], end=half_closed)
        await client.send()
        await client.until(lambda: client.received(stream_id) == grpc_frame(b"a"))
        if half_closed:
            await asyncio.wait_for(started.wait(), 5)
        client.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
        await client.send()
        await asyncio.wait_for(finished.wait(), 5)
        assert outcome == ["cancelled"]
        assert await client.call(ECHO, [b"still here"]) == [b"still here"]
        assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in client.seen)


@pytest.mark.parametrize(
    ("messages", "pieces"),
    [([b"m1", b"m2"], 1), ([], 1), ([b"m1"], 2)],
    ids=["after-two-messages", "without-any-message", "split-by-continuation"],
)
async def test_client_trailers_end_the_requests(messages: list[bytes], pieces: int) -> None:
    async def echo_then_done(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for message in requests:
            yield message
        yield b"done"  # reached only once the requests end

    async with serving(EchoThenDone=echo_then_done) as running, h2_client(running) as client:
        stream_id = client.request("/t.T/EchoThenDone", messages, end=False)
        await client.send()
        client.conn.send_headers(stream_id, [(b"x-client-trailer", b"1")], end_stream=True)
        await client.send(split_header_block(client.conn.data_to_send(), pieces))
        assert await client.response(stream_id) == ([*messages, b"done"], {b"grpc-status": b"0"})


async def test_client_frames_after_the_server_ended_are_ignored() -> None:
    """HTTP/2 lets the client keep sending on a stream the server has closed its side of."""
    async with serving() as running, h2_client(running) as client:
        stream_id = client.request(FIRST_ONLY, [b"a"], end=False)
        await client.send()
        assert await client.response(stream_id) == ([b"got a"], {b"grpc-status": b"0"})
        client.conn.send_data(stream_id, grpc_frame(b"late"))
        client.conn.send_headers(stream_id, [(b"x-client-trailer", b"1")], end_stream=True)
        await client.send()
        assert await client.call(ECHO, [b"next"]) == [b"next"]
        assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in client.seen)


# Every request field but ``:path``, never indexed: the dynamic table is the tests' to move.
FIELDS_BUT_PATH = hpack.Encoder().encode(
    [hpack.NeverIndexedHeaderTuple(n, v) for n, v in request_headers(ECHO) if n != b":path"],
    huffman=False,
)


async def serve_header_blocks(blocks: dict[int, bytes]) -> tuple[dict[int, bytes], dict[int, list[bytes]]]:
    """Each block opens its stream, which sends one message ``m<stream id>`` and ends.

    Returns each stream's grpc-status and the messages the server sent on it; a GOAWAY
    (the connection failing) fails the test.
    """
    frames = [
        HeadersFrame(sid, block, flags=["END_HEADERS"]).serialize()
        + DataFrame(sid, grpc_frame(b"m%d" % sid), flags=["END_STREAM"]).serialize()
        for sid, block in blocks.items()
    ]
    statuses: dict[int, bytes] = {}
    replies: dict[int, bytes] = {}
    async with serving() as running:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        try:
            writer.write(after_preface(*frames))
            raw, decoder = RawFrames(reader), hpack.Decoder()
            while len(statuses) < len(blocks):
                frame = await raw.next()
                assert frame is not None and not isinstance(frame, GoAwayFrame), frame
                if isinstance(frame, DataFrame):
                    replies[frame.stream_id] = replies.get(frame.stream_id, b"") + frame.data
                elif isinstance(frame, HeadersFrame):
                    fields = dict(decoder.decode(frame.data, raw=True))
                    if b"grpc-status" in fields:
                        statuses[frame.stream_id] = fields[b"grpc-status"]
        finally:
            writer.close()
    return statuses, {sid: grpc_unframe(data) for sid, data in replies.items()}


async def test_repeated_header_blocks_decode_as_the_table_says_at_the_time() -> None:
    """Identical header blocks may be served from a cache, but never across a table change.

    ``\\xbe`` names dynamic entry 62, the newest: first ``/t.T/Echo``, then, once another
    block has added ``/t.T/Other`` in front of it, that one (no such method).
    """
    blocks = {
        1: FIELDS_BUT_PATH + path_literal(ECHO, indexed=True),
        3: FIELDS_BUT_PATH + b"\xbe",  # Echo, decoded and remembered
        5: FIELDS_BUT_PATH + b"\xbe",  # Echo, from the cache
        7: FIELDS_BUT_PATH + path_literal("/t.T/Other", indexed=True),  # entry 62 is Other now, 63 Echo
        9: FIELDS_BUT_PATH + b"\xbe",  # the same bytes as streams 3 and 5, now Other
        11: FIELDS_BUT_PATH + b"\xbf",  # Echo
    }
    statuses, replies = await serve_header_blocks(blocks)
    assert statuses == {1: b"0", 3: b"0", 5: b"0", 7: b"12", 9: b"12", 11: b"0"}
    assert replies == {sid: [b"m%d" % sid] for sid in (1, 3, 5, 11)}


async def test_a_repeated_block_that_resizes_the_table_is_decoded_again() -> None:
    """A size update at the start of a block changes the table even when no entry moves.

    Served from a cache, stream 5 would skip its update and leave the table at size 0;
    stream 7's entry would then be dropped, and stream 9's reference to it would be a
    decoding error for the whole connection.
    """

    def resize(size: int) -> bytes:  # dynamic table size update: 001 and a 5-bit prefix integer
        head, *rest = hpack.hpack.encode_integer(size, 5)
        return bytes([0x20 | head, *rest])

    path = path_literal(ECHO, indexed=False)
    blocks = {
        1: resize(4096) + FIELDS_BUT_PATH + path,
        3: resize(0) + FIELDS_BUT_PATH + path,
        5: resize(4096) + FIELDS_BUT_PATH + path,  # the bytes of stream 1
        7: FIELDS_BUT_PATH + path_literal(ECHO, indexed=True),  # entry 62
        9: FIELDS_BUT_PATH + b"\xbe",
    }
    statuses, _ = await serve_header_blocks(blocks)
    assert statuses == dict.fromkeys(blocks, b"0")


@pytest.mark.parametrize(
    ("sent", "code"),
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ErrorCodes.PROTOCOL_ERROR, id="http1-request"),
        pytest.param(b"PRI * HTTP/1.1", ErrorCodes.PROTOCOL_ERROR, id="short-and-already-wrong-preface"),
        pytest.param(
            after_preface(
                HeadersFrame(1, hpack.Encoder().encode(request_headers(ECHO))).serialize(),  # no END_HEADERS
                PingFrame(0, b"12345678").serialize(),
            ),
            ErrorCodes.PROTOCOL_ERROR,
            id="interrupted-header-block",
        ),
        pytest.param(
            after_preface(ContinuationFrame(1, b"", flags=["END_HEADERS"]).serialize()),
            ErrorCodes.PROTOCOL_ERROR,
            id="stray-continuation",
        ),
        pytest.param(
            after_preface(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x"),  # hyperframe refuses to build it
            ErrorCodes.PROTOCOL_ERROR,
            id="data-on-stream-0",
        ),
        pytest.param(
            after_preface(b"\xff\xff\xff\x00\x00\x00\x00\x00\x00"),  # a 16 MiB DATA frame's header
            ErrorCodes.FRAME_SIZE_ERROR,
            id="frame-over-the-advertised-max",
        ),
    ],
)
async def test_bad_input_gets_goaway_and_close(sent: bytes, code: ErrorCodes) -> None:
    async with serving() as running:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        try:
            writer.write(sent)
            frames = await RawFrames(reader).until_closed()  # returns only once the server closes
        finally:
            writer.close()
        goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
        assert [g.error_code for g in goaways] == [code]
        assert frames[-1] is goaways[0]


async def test_stop_lets_an_open_stream_finish_and_refuses_new_ones() -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for message in requests:
            arrived.set()
            await release.wait()
            yield message

    async with serving(Slow=slow) as running, h2_client(running) as client:
        assert await client.call(ECHO, [b"warm-up"]) == [b"warm-up"]  # one stream done before the open one
        open_id = client.request("/t.T/Slow", [b"in flight"])
        await client.send()
        await asyncio.wait_for(arrived.wait(), 5)
        started = time.monotonic()
        stopping = asyncio.create_task(running.server.stop(grace=5))
        # h2 gives up on a connection at GOAWAY; from here the frames are read raw.
        frames = RawFrames(client.reader)
        goaway = await frames.next()
        assert isinstance(goaway, GoAwayFrame)
        assert (goaway.error_code, goaway.last_stream_id) == (ErrorCodes.NO_ERROR, open_id)
        # A stream the client opened before it saw the GOAWAY.
        late_id = open_id + 2
        block = client.conn.encoder.encode(request_headers(ECHO))
        client.writer.write(HeadersFrame(late_id, block, flags=["END_HEADERS", "END_STREAM"]).serialize())
        refused = await frames.next()
        assert isinstance(refused, RstStreamFrame)
        assert (refused.stream_id, refused.error_code) == (late_id, ErrorCodes.REFUSED_STREAM)
        assert not stopping.done()
        release.set()
        rest = await frames.until_closed()
        await stopping
        assert time.monotonic() - started < 2, "stop waited for the stream, not for the grace period"
    assert [(type(f), f.stream_id) for f in rest] == [
        (HeadersFrame, open_id),
        (DataFrame, open_id),
        (HeadersFrame, open_id),
    ]
    assert grpc_unframe(rest[1].data) == [b"in flight"]
    assert "END_STREAM" in rest[2].flags
    decoder = hpack.Decoder()
    headers = [(b":status", b"200"), (b"content-type", b"application/grpc")]
    assert decoder.decode(rest[0].data, raw=True) == headers
    assert decoder.decode(rest[2].data, raw=True) == [(b"grpc-status", b"0")]


async def test_stop_says_goaway_to_an_idle_connection() -> None:
    async with serving() as running, h2_client(running) as client:
        assert await client.call(ECHO, [b"x"]) == [b"x"]
        await running.server.stop(grace=5)
        frames = await RawFrames(client.reader).until_closed()
    assert [(type(f), getattr(f, "error_code", None)) for f in frames] == [(GoAwayFrame, ErrorCodes.NO_ERROR)]


async def test_stop_cuts_a_stream_that_outlives_the_grace_period() -> None:
    cancelled = asyncio.Event()

    async def stuck(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for message in requests:
                yield message
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with serving(Stuck=stuck) as running, h2_client(running) as client:
        stream_id = client.request("/t.T/Stuck", [b"x"])
        await client.send()
        await client.until(lambda: client.received(stream_id) == grpc_frame(b"x"))
        started = time.monotonic()
        await running.server.stop(grace=0.2)
        assert 0.19 < time.monotonic() - started < 1
        await asyncio.wait_for(cancelled.wait(), 1)
        frames = await RawFrames(client.reader).until_closed()
    assert [type(f) for f in frames] == [GoAwayFrame]
