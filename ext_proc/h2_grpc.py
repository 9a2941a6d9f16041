"""A small HTTP/2 server for gRPC bidirectional streams, run on the event loop itself.

Why not ``grpc.aio``: there every gRPC message crosses three threads (an event
engine thread reads the socket, the completion-queue poller hands the event over,
the event loop runs the handler). ext_proc spent 0.55 ms of CPU per request there,
against 0.22 ms here; the gateway's own logic is about 0.05 ms. Here one ``data_received``
parses every frame the read delivered, for all of Envoy's streams at once, and all
the replies produced in one loop iteration leave in one write (bench/README.md has
the measurements).

Scope: what Envoy's gRPC client speaks — cleartext HTTP/2 with prior knowledge,
uncompressed messages, no server push. Stream-stream methods only; a unary or
streaming client works too, as gRPC frames them the same way. HPACK, both ways,
is the ``hpack`` package's; the few header blocks the server sends are never-indexed
fields, so the peer's table settings cannot desynchronise them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import logging
import socket
import struct
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import hpack
from hpack.exceptions import HPACKError
from infery_proto.wire import EXT_PROC_TOKEN_HEADER

log = logging.getLogger("infery.ext_proc.h2")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6) and the flags used here.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

# Settings identifiers.
HEADER_TABLE_SIZE, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 0x1, 0x3, 0x4, 0x5

# Error codes.
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR = 0x0, 0x1, 0x3, 0x6
REFUSED_STREAM, COMPRESSION_ERROR = 0x7, 0x9

# gRPC status codes sent by the server itself.
GRPC_OK, GRPC_RESOURCE_EXHAUSTED, GRPC_UNIMPLEMENTED, GRPC_INTERNAL = 0, 8, 12, 13
GRPC_UNAUTHENTICATED = 16

# On a TCP listener every stream carries the shared token in this header (gRPC initial
# metadata); Envoy adds it to each stream it opens to ext_proc (its bootstrap).
TOKEN_HEADER = EXT_PROC_TOKEN_HEADER.encode()

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535
DEFAULT_FRAME_SIZE = 16_384
RECV_FRAME_SIZE = 1 << 20
MAX_HEADER_BLOCK = 64 * 1024
HEADER_CACHE_SIZE = 64  # distinct header blocks remembered per connection
MAX_MESSAGE = 64 * 1024 * 1024
# Envoy opens another connection when a connection reaches this many streams.
STREAM_LIMIT = 16_384
# Unread input is bounded: a stream may hold one whole message, a connection four.
# Window is handed back as the handler takes messages, so a peer can never get
# further ahead of a handler than that (Envoy sends one message per reply anyway).
CONNECTION_WINDOW_MESSAGES = 4
# Bytes queued for a peer that does not read, beyond which we stop reading it.
WRITE_BUFFER_HIGH = 4 * 1024 * 1024

_FRAME_HEAD = struct.Struct(">I B I")  # (length << 8 | type), flags, stream id
_U32 = struct.Struct(">I")


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return _FRAME_HEAD.pack(len(payload) << 8 | kind, flags, stream_id) + payload


def _never_indexed(*fields: tuple[bytes, bytes]) -> bytes:
    """An HPACK block of never-indexed fields: the peer's table never changes, so the
    blocks can be built once and sent on any connection in any order."""
    encoder = hpack.Encoder()
    return bytes(encoder.encode([hpack.NeverIndexedHeaderTuple(n, v) for n, v in fields], huffman=False))


def _status_trailers(code: int, message: str) -> bytes:
    fields = [(b"grpc-status", str(code).encode())]
    if message:
        # grpc-message: UTF-8, with bytes outside printable ASCII (and "%") percent-encoded.
        raw = message.encode()[:512]
        text = "".join(chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in raw)
        fields.append((b"grpc-message", text.encode("ascii")))
    return _never_indexed(*fields)


_UNAUTHENTICATED = _status_trailers(GRPC_UNAUTHENTICATED, "missing or wrong ext_proc token")
RESPONSE_HEADERS = _never_indexed((b":status", b"200"), (b"content-type", b"application/grpc"))
OK_TRAILERS = _status_trailers(GRPC_OK, "")


Handler = Callable[[AsyncIterator[Any]], AsyncGenerator[Any, None]]


@dataclass(frozen=True, slots=True)
class Method:
    """A stream-stream method: the handler maps an iterator of requests to responses."""

    handler: Handler
    deserialize: Callable[[bytes], Any]
    serialize: Callable[[Any], bytes]
    # Served without the TCP listener's token: for a method that reveals nothing and
    # that a caller unable to send the token must reach (Envoy's health checker).
    public: bool = False


class ProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class _Stream:
    __slots__ = (
        "buffer",
        "closed",
        "ended",
        "headers_sent",
        "id",
        "inbox",
        "pending",
        "recv_unacked",
        "send_window",
        "task",
        "trailers",
        "waiter",
    )

    def __init__(self, stream_id: int, send_window: int) -> None:
        self.id = stream_id
        self.inbox: deque[bytes] = deque()
        self.buffer = bytearray()
        self.waiter: asyncio.Future[None] | None = None
        self.ended = False  # the client half-closed (or reset)
        self.send_window = send_window
        self.recv_unacked = 0
        self.headers_sent = False
        self.pending = bytearray()  # gRPC-framed bytes waiting for flow-control window
        self.trailers: bytes | None = None  # sent once ``pending`` drains
        self.task: asyncio.Task[None] | None = None
        self.closed = False  # our END_STREAM went out (or the stream was reset)

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Requests:
    """The handler's view of the client's messages, in order, until it half-closes."""

    __slots__ = ("_connection", "_deserialize", "_stream")

    def __init__(self, connection: Connection, stream: _Stream, deserialize: Callable[[bytes], Any]) -> None:
        self._connection, self._stream, self._deserialize = connection, stream, deserialize

    def __aiter__(self) -> _Requests:
        return self

    async def __anext__(self) -> Any:
        stream = self._stream
        while not stream.inbox:
            if stream.ended:
                raise StopAsyncIteration
            stream.waiter = self._connection.loop.create_future()
            await stream.waiter
        message = stream.inbox.popleft()
        self._connection.consumed(stream, 5 + len(message))
        return self._deserialize(message)


def _table_state(table: Any) -> tuple[int, int, object]:
    """What a decode can change in an HPACK dynamic table: its size limit, its entries."""
    entries = table.dynamic_entries
    return table.maxsize, len(entries), entries[0] if entries else None


class Connection(asyncio.Protocol):
    """One client connection (Envoy opens one per worker thread)."""

    def __init__(
        self,
        methods: dict[bytes, Method],
        on_close: Callable[[Connection], None],
        max_message: int = MAX_MESSAGE,
        token: bytes | None = None,
    ) -> None:
        self._methods = methods
        self._token = token  # None: no check (a Unix socket, guarded by its directory)
        # The last header block that carried the token. Envoy repeats one block per stream and
        # _decode serves a repeat as the same tuple: an identity check then replaces the scan.
        self._authenticated_headers: Sequence[tuple[bytes, bytes]] | None = None
        self._on_close = on_close
        self.loop = asyncio.get_running_loop()
        self._max_message = max_message
        self._stream_window = min(MAX_WINDOW, max_message + 5)
        # Never below HTTP/2's initial 65,535: a connection window cannot shrink.
        self._connection_window = max(
            DEFAULT_WINDOW, min(MAX_WINDOW, CONNECTION_WINDOW_MESSAGES * self._stream_window)
        )
        self._transport: asyncio.Transport | None = None
        self._in = bytearray()
        self._preface_seen = False
        self._decoder = hpack.Decoder()
        self._decoder.max_header_list_size = MAX_HEADER_BLOCK
        self._header_cache: dict[bytes, tuple[tuple[bytes, bytes], ...]] = {}
        self._streams: dict[int, _Stream] = {}
        self._last_stream_id = 0
        self._send_window = DEFAULT_WINDOW
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = DEFAULT_FRAME_SIZE
        self._table_size_update = False
        self._recv_unacked = 0  # bytes taken by handlers (or discarded) not yet handed back
        self._continuation: tuple[int, int, bytearray] | None = None  # (stream id, flags, block)
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._blocked: dict[int, _Stream] = {}  # streams with pending data, in arrival order
        self._going_away = False
        self.idle = asyncio.Event()

    # ------------------------------------------------------------------ transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        settings = struct.pack(
            ">HIHIHI",
            INITIAL_WINDOW_SIZE,
            self._stream_window,
            MAX_FRAME_SIZE,
            RECV_FRAME_SIZE,
            MAX_CONCURRENT_STREAMS,
            STREAM_LIMIT,
        )
        self._write(_frame(SETTINGS, 0, 0, settings))
        if self._connection_window > DEFAULT_WINDOW:
            self._write(_frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._connection_window - DEFAULT_WINDOW)))

    def pause_writing(self) -> None:
        """The peer is not reading what we send: stop reading what it sends (PINGs, new streams)."""
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        buf = self._in
        buf += data
        try:
            if not self._preface_seen:
                if len(buf) < len(PREFACE):
                    if not PREFACE.startswith(bytes(buf)):
                        raise ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 client preface")
                    return
                if buf[: len(PREFACE)] != PREFACE:
                    raise ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 client preface")
                self._preface_seen = True
                del buf[: len(PREFACE)]
            offset, size = 0, len(buf)
            view = memoryview(buf)
            try:
                while size - offset >= 9:
                    head, flags, stream_id = _FRAME_HEAD.unpack_from(buf, offset)
                    length = head >> 8
                    if length > RECV_FRAME_SIZE:
                        raise ProtocolError(FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE")
                    end = offset + 9 + length
                    if end > size:
                        break
                    self._on_frame(head & 0xFF, flags, stream_id & 0x7FFFFFFF, view[offset + 9 : end])
                    offset = end
            finally:
                view.release()
            del buf[:offset]
        except ProtocolError as exc:
            self._fail(exc.code, str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        for stream in list(self._streams.values()):
            self._cancel(stream)
        self._streams.clear()
        self.idle.set()
        self._on_close(self)

    def close(self) -> None:
        """Graceful: refuse new streams, finish the open ones, then close."""
        if self._transport is None:
            return
        if not self._going_away:
            self._going_away = True
            self._write(_frame(GOAWAY, 0, 0, struct.pack(">II", self._last_stream_id, NO_ERROR)))
        if not self._streams:
            self._flush()  # the GOAWAY first: a closing transport drops later writes
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # ------------------------------------------------------------------ frames in
    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: memoryview) -> None:
        if self._continuation is not None and kind != CONTINUATION:
            raise ProtocolError(PROTOCOL_ERROR, "header block interrupted")
        if kind == DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == HEADERS:
            self._on_headers(flags, stream_id, payload)
        elif kind == CONTINUATION:
            self._on_continuation(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif kind == PING:
            if len(payload) != 8 or stream_id:
                raise ProtocolError(FRAME_SIZE_ERROR if len(payload) != 8 else PROTOCOL_ERROR, "bad PING")
            if not flags & ACK:
                self._write(_frame(PING, ACK, 0, bytes(payload)))
        elif kind == RST_STREAM:
            stream = self._streams.pop(stream_id, None)
            if stream is not None:
                self._cancel(stream)
                self._check_idle()
        elif kind == GOAWAY:
            self._going_away = True
            self._check_idle()
        elif kind == PUSH_PROMISE:
            raise ProtocolError(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        # PRIORITY and unknown frame types are ignored (RFC 9113 §5.5, §5.3.2).

    def _on_data(self, flags: int, stream_id: int, payload: memoryview) -> None:
        if stream_id == 0:
            raise ProtocolError(PROTOCOL_ERROR, "DATA on stream 0")
        frame_length = len(payload)
        if flags & PADDED:
            if not payload:
                raise ProtocolError(PROTOCOL_ERROR, "padded frame without a pad length")
            pad = payload[0]
            if pad >= len(payload):
                raise ProtocolError(PROTOCOL_ERROR, "padding longer than the frame")
            payload = payload[1 : len(payload) - pad]
        stream = self._streams.get(stream_id)
        if stream is None or stream.ended:
            if stream_id > self._last_stream_id:
                raise ProtocolError(PROTOCOL_ERROR, "DATA on an idle stream")
            self.consumed(None, frame_length)  # a stream we finished or reset: discarded
            return
        # Padding is discarded now; the data is handed back as the handler takes it.
        self.consumed(stream, frame_length - len(payload))
        buffer = stream.buffer
        buffer += payload
        delivered = False
        while len(buffer) >= 5:
            if buffer[0]:
                self._refuse(stream, GRPC_UNIMPLEMENTED, "compressed messages are not supported")
                return
            (length,) = _U32.unpack_from(buffer, 1)
            if length > self._max_message:
                self._refuse(
                    stream, GRPC_RESOURCE_EXHAUSTED, f"message larger than {self._max_message} bytes"
                )
                return
            if len(buffer) < 5 + length:
                break
            stream.inbox.append(bytes(buffer[5 : 5 + length]))
            del buffer[: 5 + length]
            delivered = True
        if flags & END_STREAM:
            if buffer:
                self._refuse(stream, GRPC_INTERNAL, "the request ended inside a message")
                return
            stream.ended = True
            delivered = True
        if delivered:
            stream.wake()

    def consumed(self, stream: _Stream | None, length: int) -> None:
        """Hand ``length`` bytes of window back once half a window is owed (rarely, for Envoy)."""
        if not length:
            return
        self._recv_unacked += length
        if self._recv_unacked >= self._connection_window // 2:
            self._write(_frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._recv_unacked)))
            self._recv_unacked = 0
        if stream is None or stream.ended:
            return  # the peer sends no more on it
        stream.recv_unacked += length
        if stream.recv_unacked >= self._stream_window // 2:
            self._write(_frame(WINDOW_UPDATE, 0, stream.id, _U32.pack(stream.recv_unacked)))
            stream.recv_unacked = 0

    def _release(self, stream: _Stream) -> None:
        """Input no handler will take any more: its window goes back to the connection."""
        unread = len(stream.buffer) + sum(5 + len(m) for m in stream.inbox)
        stream.buffer.clear()
        stream.inbox.clear()
        self.consumed(None, unread)

    def _on_headers(self, flags: int, stream_id: int, payload: memoryview) -> None:
        if stream_id == 0:
            raise ProtocolError(PROTOCOL_ERROR, "HEADERS on stream 0")
        start, end = 0, len(payload)
        if flags & PADDED:
            if not payload:
                raise ProtocolError(PROTOCOL_ERROR, "padded frame without a pad length")
            start, end = 1, end - payload[0]
        if flags & PRIORITY_FLAG:
            start += 5
        if start > end:
            raise ProtocolError(PROTOCOL_ERROR, "padding longer than the frame")
        block = bytearray(payload[start:end])
        if flags & END_HEADERS:
            self._on_header_block(flags, stream_id, block)
        else:
            self._continuation = (stream_id, flags, block)

    def _on_continuation(self, flags: int, stream_id: int, payload: memoryview) -> None:
        if self._continuation is None or self._continuation[0] != stream_id:
            raise ProtocolError(PROTOCOL_ERROR, "unexpected CONTINUATION")
        _, first_flags, block = self._continuation
        block += payload
        if len(block) > MAX_HEADER_BLOCK:
            raise ProtocolError(PROTOCOL_ERROR, "header block too large")
        if flags & END_HEADERS:
            self._continuation = None
            self._on_header_block(first_flags, stream_id, block)

    def _decode(self, block: bytes) -> Sequence[tuple[bytes, bytes]]:
        """HPACK-decode a header block, from a cache when the same bytes must mean the same.

        Envoy opens a stream per request with the same block every time: indexed fields
        and literals it does not index (its ``:path`` among them). Decoding that block
        leaves the dynamic table as it was, so while the table does not change the bytes
        decode to the same fields; pure-Python Huffman decoding cost ~20 us per stream.
        Any block that changes the table (adds, evicts, resizes) empties the cache.
        """
        cached = self._header_cache.get(block)
        if cached is not None:
            return cached
        table = self._decoder.header_table
        before = _table_state(table)
        try:
            headers = tuple(cast(Iterable[tuple[bytes, bytes]], self._decoder.decode(block, raw=True)))
        except HPACKError as exc:
            raise ProtocolError(COMPRESSION_ERROR, f"HPACK: {exc}") from exc
        after = _table_state(table)
        # A new entry is a new tuple: identity tells an add-and-evict from no change.
        unchanged = before[:2] == after[:2] and before[2] is after[2]
        if not unchanged or len(self._header_cache) >= HEADER_CACHE_SIZE:
            self._header_cache.clear()
        if unchanged:
            self._header_cache[block] = headers
        return headers

    def _on_header_block(self, flags: int, stream_id: int, block: bytearray) -> None:
        headers = self._decode(bytes(block))
        stream = self._streams.get(stream_id)
        if stream is not None:
            # Trailers from the client: the end of its messages.
            if stream.buffer:
                self._refuse(stream, GRPC_INTERNAL, "the request ended inside a message")
                return
            stream.ended = True
            stream.wake()
            return
        if not stream_id & 1:
            raise ProtocolError(PROTOCOL_ERROR, "HEADERS on a server stream id")
        if stream_id <= self._last_stream_id:
            # Trailers on a stream we already finished or reset: the client may still send them.
            return
        self._last_stream_id = stream_id
        if self._going_away or len(self._streams) >= STREAM_LIMIT:
            self._write(_frame(RST_STREAM, 0, stream_id, _U32.pack(REFUSED_STREAM)))
            return
        stream = _Stream(stream_id, self._peer_initial_window)
        stream.ended = bool(flags & END_STREAM)
        path = next((value for name, value in headers if name == b":path"), b"")
        method = self._methods.get(path)
        self._streams[stream_id] = stream
        self.idle.clear()  # else ``Server.stop`` would not wait for this stream
        if (
            self._token is not None
            and headers is not self._authenticated_headers
            and not (method is not None and method.public)
            and not self._authenticated(headers)
        ):
            self._finish(stream, _UNAUTHENTICATED)
            return
        if method is None:
            self._finish(
                stream, _status_trailers(GRPC_UNIMPLEMENTED, f"unknown method {path.decode('latin-1')}")
            )
            return
        stream.task = self.loop.create_task(self._run(stream, method))

    def _authenticated(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """The stream carries the token; compared in constant time (one scan of a few headers)."""
        presented = next((value for name, value in headers if name == TOKEN_HEADER), b"")
        if not hmac.compare_digest(presented, cast(bytes, self._token)):
            return False
        self._authenticated_headers = headers
        return True

    def _on_window_update(self, stream_id: int, payload: memoryview) -> None:
        if len(payload) != 4:
            raise ProtocolError(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            if not increment:
                raise ProtocolError(PROTOCOL_ERROR, "zero WINDOW_UPDATE")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise ProtocolError(FLOW_CONTROL_ERROR, "connection window overflow")
            self._drain_blocked()
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if not increment:
            self._reset(stream, PROTOCOL_ERROR, "zero WINDOW_UPDATE")
            return
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            self._reset(stream, FLOW_CONTROL_ERROR, "stream window overflow")
            return
        if stream.pending:
            self._send_pending(stream)

    def _on_settings(self, flags: int, stream_id: int, payload: memoryview) -> None:
        if stream_id:
            raise ProtocolError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            return
        if len(payload) % 6:
            raise ProtocolError(FRAME_SIZE_ERROR, "bad SETTINGS length")
        grown: list[_Stream] = []
        for i in range(0, len(payload), 6):
            ident, value = struct.unpack_from(">HI", payload, i)
            if ident == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolError(FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise ProtocolError(FLOW_CONTROL_ERROR, "a stream window grew past 2^31-1")
                    if delta > 0 and stream.pending:
                        grown.append(stream)
            elif ident == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME_SIZE <= value <= 2**24 - 1:
                    raise ProtocolError(PROTOCOL_ERROR, "bad max frame size")
                self._peer_max_frame = value
            elif ident == HEADER_TABLE_SIZE:
                # We never index, so our table is empty; say so in the next block.
                self._table_size_update = True
        self._write(_frame(SETTINGS, ACK, 0))
        for stream in grown:
            self._send_pending(stream)

    # ------------------------------------------------------------------ running a stream
    async def _run(self, stream: _Stream, method: Method) -> None:
        serialize = method.serialize
        try:
            # aclosing: a handler left early still runs its ``finally`` now, not at GC.
            async with contextlib.aclosing(
                method.handler(_Requests(self, stream, method.deserialize))
            ) as out:
                async for response in out:
                    if stream.closed:
                        return
                    self._send_message(stream, serialize(response))
            trailers = OK_TRAILERS
        except asyncio.CancelledError:
            if stream.closed or stream.trailers is not None:
                return  # the client reset the stream, the connection went away, or we refused it
            # Not our cancellation: something the handler awaited was cancelled.
            log.warning("stream %d: the handler was cancelled", stream.id)
            trailers = _status_trailers(GRPC_INTERNAL, "CancelledError")
        except Exception as exc:
            log.exception("stream %d: handler failed", stream.id)
            trailers = _status_trailers(GRPC_INTERNAL, type(exc).__name__)
        self._finish(stream, trailers)

    # ------------------------------------------------------------------ frames out
    def _header_block(self, block: bytes) -> bytes:
        if self._table_size_update:
            self._table_size_update = False
            return b"\x20" + block  # dynamic table size update to 0
        return block

    def _send_message(self, stream: _Stream, payload: bytes) -> None:
        if not stream.headers_sent:
            stream.headers_sent = True
            self._write(_frame(HEADERS, END_HEADERS, stream.id, self._header_block(RESPONSE_HEADERS)))
        stream.pending += b"\x00" + _U32.pack(len(payload)) + payload
        self._send_pending(stream)

    def _finish(self, stream: _Stream, trailers: bytes) -> None:
        """Trailers (with END_STREAM) once the stream's data is out. The first status wins:
        a handler that outlives a refusal of its stream cannot replace it."""
        if stream.closed or stream.trailers is not None:
            return
        if not stream.headers_sent:
            stream.headers_sent = True
            trailers = RESPONSE_HEADERS + trailers  # trailers-only response
        stream.trailers = trailers
        if not stream.pending:
            self._send_trailers(stream)

    def _send_trailers(self, stream: _Stream) -> None:
        assert stream.trailers is not None
        # One frame: grpc-message is capped at 512 bytes (under 1.6 KB encoded), far below
        # the smallest frame size a peer may ask for (16 KiB).
        block = self._header_block(stream.trailers)
        self._write(_frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block))
        stream.closed = True
        self._forget(stream)

    def _send_pending(self, stream: _Stream) -> None:
        pending = stream.pending
        while pending:
            allowed = min(len(pending), self._send_window, stream.send_window, self._peer_max_frame)
            if allowed <= 0:
                # Only streams waiting on the connection's window queue here: a stream
                # waiting on its own resumes on its own WINDOW_UPDATE (or SETTINGS), so
                # a connection WINDOW_UPDATE never walks streams it cannot unblock.
                if stream.send_window > 0:
                    self._blocked[stream.id] = stream
                else:
                    self._blocked.pop(stream.id, None)
                return
            self._write(_frame(DATA, 0, stream.id, bytes(pending[:allowed])))
            del pending[:allowed]
            self._send_window -= allowed
            stream.send_window -= allowed
        self._blocked.pop(stream.id, None)
        if stream.trailers is not None:
            self._send_trailers(stream)

    def _drain_blocked(self) -> None:
        for stream in list(self._blocked.values()):
            if self._send_window <= 0:
                return
            self._send_pending(stream)

    def _reset(self, stream: _Stream, h2_code: int, reason: str) -> None:
        """An HTTP/2 stream error: RST_STREAM, and the handler stops."""
        log.warning("stream %d reset: %s", stream.id, reason)
        self._write(_frame(RST_STREAM, 0, stream.id, _U32.pack(h2_code)))
        self._streams.pop(stream.id, None)
        self._cancel(stream)
        self._check_idle()

    def _refuse(self, stream: _Stream, code: int, message: str) -> None:
        """A gRPC error on one stream (bad message framing): its status goes out, the handler stops."""
        log.warning("stream %d refused: %s", stream.id, message)
        stream.ended = True
        self._release(stream)
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        self._finish(stream, _status_trailers(code, message))

    def _cancel(self, stream: _Stream) -> None:
        stream.closed = stream.ended = True
        self._blocked.pop(stream.id, None)
        self._release(stream)
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        stream.wake()

    def _forget(self, stream: _Stream) -> None:
        """Our side is done. Late DATA from the client is then discarded (its window handed back)."""
        self._streams.pop(stream.id, None)
        self._release(stream)
        self._check_idle()

    def _check_idle(self) -> None:
        if not self._streams:
            self.idle.set()
            if self._going_away and self._transport is not None:
                self._flush()
                self._transport.close()
        else:
            self.idle.clear()

    def _fail(self, code: int, reason: str) -> None:
        log.warning("HTTP/2 connection error: %s", reason)
        self._write(
            _frame(GOAWAY, 0, 0, struct.pack(">II", self._last_stream_id, code) + reason.encode()[:256])
        )
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def _write(self, data: bytes) -> None:
        """Replies made in one loop iteration leave together, in one write."""
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._out))
        self._out.clear()


class Server:
    """Listens on a TCP address, a Unix socket, or both; ``stop`` drains open streams first."""

    def __init__(self, methods: dict[str, Method], max_message: int = MAX_MESSAGE) -> None:
        self._methods = {path.encode(): method for path, method in methods.items()}
        self._max_message = max_message
        self._connections: set[Connection] = set()
        self._listeners: list[asyncio.Server] = []

    async def start(self, host: str, port: int, token: bytes | None = None) -> int:
        """``token``: every stream on this listener must carry it in TOKEN_HEADER (else UNAUTHENTICATED)."""
        if token is not None and not token:
            raise ValueError("an empty token would let anyone in")
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(lambda: self._connection(token), host, port, reuse_address=True)
        self._listeners.append(listener)
        return int(listener.sockets[0].getsockname()[1])

    async def start_unix(self, path: str) -> None:
        """Envoy beside us (same host or pod) reaches a Unix socket without the TCP stack.

        A stale socket file is replaced; a live one is not: that would silently cut
        another process (say, a second ext_proc given the same path) off from Envoy.
        """
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        else:
            raise OSError(errno.EADDRINUSE, f"another process is listening on {path}")
        finally:
            probe.close()
        loop = asyncio.get_running_loop()
        self._listeners.append(await loop.create_unix_server(self._connection, path))

    def _connection(self, token: bytes | None = None) -> Connection:
        conn = Connection(self._methods, self._connections.discard, self._max_message, token)
        self._connections.add(conn)
        return conn

    async def stop(self, grace: float) -> None:
        for listener in self._listeners:
            listener.close()
        for conn in list(self._connections):
            conn.close()
        waits: list[Coroutine[Any, Any, Any]] = [conn.idle.wait() for conn in self._connections]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), grace)
        for conn in list(self._connections):
            conn.abort()
        for listener in self._listeners:
            await listener.wait_closed()
