"""The test peers of ext_proc/h2_grpc/: a grpcio channel, an h2 client, raw frames, test handlers.

Two independent implementations face the server: ``grpcio`` (a real gRPC client) and the
``h2`` library's client state machine (frame level, with raw frames built by hyperframe
where h2 will not produce them). ``serving`` runs a server on a free port and stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
from h2.settings import SettingCodes, Settings
from hyperframe.frame import ContinuationFrame, Frame, HeadersFrame, SettingsFrame

from ext_proc.h2_grpc import Connection, Limits, Method, Server
from ext_proc.h2_grpc.limits import DEFAULT_LIMITS

ECHO, FIRST_ONLY, FAIL_AT_ONCE, FAIL_LATER = "/t.T/Echo", "/t.T/FirstOnly", "/t.T/Fail", "/t.T/FailLater"
MIB = 1 << 20
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def identity(data: bytes) -> bytes:
    return data


def payload(size: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(size))


async def echo(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for message in requests:
        yield message


async def first_only(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Answers the first message and ends the call; the rest are never read."""
    yield b"got " + await anext(requests)


async def fail_at_once(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for _ in requests:
        raise ValueError("boom")
    yield b""


async def fail_later(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for message in requests:
        yield message
        raise KeyError("late")


HANDLERS = {ECHO: echo, FIRST_ONLY: first_only, FAIL_AT_ONCE: fail_at_once, FAIL_LATER: fail_later}


@dataclass
class Running:
    server: Server
    port: int


@contextlib.asynccontextmanager
async def serving(
    max_message: int = 64 * MIB,
    limits: Limits = DEFAULT_LIMITS,
    **extra: Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]],
) -> AsyncIterator[Running]:
    """The standard handlers plus ``extra`` (keyword = method name under /t.T/), on a free port."""
    handlers = {**HANDLERS, **{f"/t.T/{name}": handler for name, handler in extra.items()}}
    methods = {path: Method(handler, identity, identity) for path, handler in handlers.items()}  # type: ignore[arg-type]
    server = Server(methods, max_message=max_message, limits=limits)
    port = await server.start("127.0.0.1", 0)
    try:
        yield Running(server, port)
    finally:
        await server.stop(grace=1)


@contextlib.asynccontextmanager
async def grpc_channel(running: Running) -> AsyncIterator[grpc.aio.Channel]:
    options = [
        ("grpc.max_receive_message_length", -1),
        ("grpc.max_send_message_length", -1),
        ("grpc.enable_http_proxy", 0),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=options) as channel:
        yield channel


def grpc_method(channel: grpc.aio.Channel, path: str) -> grpc.aio.StreamStreamMultiCallable:
    return channel.stream_stream(path, request_serializer=identity, response_deserializer=identity)


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def grpc_unframe(data: bytes) -> list[bytes]:
    messages = []
    while data:
        assert data[0] == 0, "compressed flag"
        length = int.from_bytes(data[1:5], "big")
        assert len(data) >= 5 + length, "truncated message"
        messages.append(data[5 : 5 + length])
        data = data[5 + length :]
    return messages


def request_headers(path: str) -> list[tuple[bytes, bytes]]:
    """``:path`` last and behind a long ``:authority``: a block split in two carries it in the second part."""
    return [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"a" * 200),
        (b":path", path.encode()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]


def parse_frames(data: bytes) -> list[Frame]:
    frames = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    return frames


def split_header_block(data: bytes, pieces: int, *, pad: int | None = None, priority: bool = False) -> bytes:
    """Re-frames the one HEADERS frame h2 produced as HEADERS + CONTINUATION frames (h2 never splits)."""
    (headers,) = parse_frames(data)
    assert isinstance(headers, HeadersFrame)
    block, step = headers.data, -(-len(headers.data) // pieces)
    chunks = [block[i : i + step] for i in range(0, len(block), step)]
    end_stream = ["END_STREAM"] if "END_STREAM" in headers.flags else []
    first = HeadersFrame(headers.stream_id, chunks[0], flags=end_stream)
    if pad is not None:
        first.flags.add("PADDED")
        first.pad_length = pad
    if priority:
        first.flags.add("PRIORITY")
    frames = [first] + [ContinuationFrame(headers.stream_id, chunk) for chunk in chunks[1:]]
    frames[-1].flags.add("END_HEADERS")
    return b"".join(frame.serialize() for frame in frames)


class H2Client:
    """h2's client state machine over a plain TCP connection; raw bytes can go out in between."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, auto_ack: bool) -> None:
        self.reader, self.writer, self.auto_ack = reader, writer, auto_ack
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.seen: list[h2.events.Event] = []

    @classmethod
    async def connect(cls, port: int, *, window: int | None = None, auto_ack: bool = True) -> H2Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer, auto_ack)
        if window is not None:
            client.conn.local_settings = Settings(
                client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: window}
            )
        client.conn.initiate_connection()
        await client.send()
        await client.until(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in client.seen))
        return client

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def send(self, raw: bytes = b"") -> None:
        self.writer.write(raw + self.conn.data_to_send())
        await self.writer.drain()

    async def _receive(self) -> None:
        data = await self.reader.read(1 << 16)
        if not data:
            raise ConnectionError("the server closed the connection")
        events = self.conn.receive_data(data)
        for event in events:
            if self.auto_ack and isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        self.seen += events
        await self.send()  # h2's SETTINGS and PING acknowledgements, window updates

    async def until(self, done: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                await self._receive()

    async def settle(self, seconds: float = 0.05) -> None:
        """Takes in whatever arrives within ``seconds``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    await self._receive()

    def request(self, path: str, messages: Sequence[bytes] = (), *, end: bool = True) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, request_headers(path))
        for message in messages:
            self.conn.send_data(stream_id, grpc_frame(message))
        if end:
            self.conn.end_stream(stream_id)
        return stream_id

    def events(self, stream_id: int) -> list[h2.events.Event]:
        return [e for e in self.seen if getattr(e, "stream_id", None) == stream_id]

    def ended(self, stream_id: int) -> bool:
        ends = h2.events.StreamEnded | h2.events.StreamReset
        return any(isinstance(e, ends) for e in self.events(stream_id))

    def received(self, stream_id: int) -> bytes:
        return b"".join(e.data for e in self.events(stream_id) if isinstance(e, h2.events.DataReceived))

    async def response(self, stream_id: int) -> tuple[list[bytes], dict[bytes, bytes]]:
        """The stream's messages and trailers, once it ends."""
        await self.until(lambda: self.ended(stream_id))
        trailers = [e.headers for e in self.events(stream_id) if isinstance(e, h2.events.TrailersReceived)]
        assert len(trailers) == 1, self.events(stream_id)
        return grpc_unframe(self.received(stream_id)), dict(trailers[0])

    async def call(self, path: str, messages: Sequence[bytes]) -> list[bytes]:
        stream_id = self.request(path, messages)
        await self.send()
        replies, trailers = await self.response(stream_id)
        assert trailers[b"grpc-status"] == b"0"
        return replies


@contextlib.asynccontextmanager
async def h2_client(
    running: Running, *, window: int | None = None, auto_ack: bool = True
) -> AsyncIterator[H2Client]:
    client = await H2Client.connect(running.port, window=window, auto_ack=auto_ack)
    try:
        yield client
    finally:
        await client.close()


class RawFrames:
    """The server's frames parsed by hyperframe alone, for where h2's state machine cannot follow."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader, self.buffer = reader, b""

    async def next(self, timeout: float = 5.0) -> Frame | None:
        """The next frame, or None once the server has closed the connection."""
        async with asyncio.timeout(timeout):
            while True:
                if len(self.buffer) >= 9:
                    frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
                    if len(self.buffer) >= 9 + length:
                        frame.parse_body(memoryview(self.buffer[9 : 9 + length]))
                        self.buffer = self.buffer[9 + length :]
                        return frame
                data = await self.reader.read(1 << 16)
                if not data:
                    assert not self.buffer, "connection closed mid-frame"
                    return None
                self.buffer += data

    async def until_closed(self) -> list[Frame]:
        frames = []
        while (frame := await self.next()) is not None:
            frames.append(frame)
        return frames


def acks(client: H2Client) -> list[bytes]:
    return [e.ping_data for e in client.seen if isinstance(e, h2.events.PingAckReceived)]


def after_preface(*frames: bytes) -> bytes:
    return PREFACE + SettingsFrame(0).serialize() + b"".join(frames)


def path_literal(path: str, *, indexed: bool) -> bytes:
    """``:path`` (static name 4) as a literal, added to the dynamic table or not."""
    return bytes([0x44 if indexed else 0x04, len(path)]) + path.encode()


class MemoryTransport:
    """A server connection's transport in memory: it keeps what the server writes for the test
    to read, and records whether the server closed it or stopped reading."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        assert not self.closed, "a write after close"
        self.written += data

    def writelines(self, pieces: list[bytes | memoryview]) -> None:
        for piece in pieces:
            self.write(piece)  # type: ignore[arg-type]

    def take(self) -> bytes:
        data = bytes(self.written)
        self.written.clear()
        return data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def memory_connection(server: Server, token: bytes | None = None) -> tuple[Connection, MemoryTransport]:
    """One of ``server``'s connections, made as its listeners make them, on an in-memory transport."""
    connection = server._connection(token)
    transport = MemoryTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport


def standard_server(max_message: int = 64 * MIB, **kwargs: Any) -> Server:
    methods = {path: Method(handler, identity, identity) for path, handler in HANDLERS.items()}  # type: ignore[arg-type]
    return Server(methods, max_message=max_message, **kwargs)
