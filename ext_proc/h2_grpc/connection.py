"""One HTTP/2 connection's state: its streams, both directions' flow-control windows, the
peer's settings, HPACK decoding, and the frames it writes back.

The connection knows nothing of methods or tokens: a new stream's header block goes to
``open_stream`` (:class:`.server.Router`), which starts a handler on it or ends it with a
status. Handlers talk back through :meth:`Connection.send_message` and :meth:`Connection.finish`
and read through :class:`Requests`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import hpack
from hpack.exceptions import HPACKError, OversizedHeaderListError

from ext_proc.h2_grpc import frames
from ext_proc.h2_grpc.frames import (
    ACK,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME_SIZE,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_HEAD,
    FRAME_SIZE_ERROR,
    GOAWAY,
    GRPC_INTERNAL,
    HANDOVER_SIZE,
    HEADER_TABLE_SIZE,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    LARGEST_FRAME_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
    MAX_WINDOW,
    MESSAGE_HEAD,
    NO_ERROR,
    PADDED,
    PING,
    PREFACE,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RESPONSE_HEADERS,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Message,
    MessageError,
    ProtocolError,
    encode,
    take_messages,
)
from ext_proc.h2_grpc.limits import (
    CONNECTION_WINDOW_MESSAGES,
    DEFAULT_LIMITS,
    MAX_FRAME,
    MAX_MESSAGE,
    WRITE_BUFFER_HIGH,
    Budget,
    Limits,
)

log = logging.getLogger("infery.ext_proc.h2")

HEADER_CACHE_SIZE = 64  # distinct header blocks remembered per connection
# A header block's frames after the first each cost this much of the block's budget (a frame
# head): empty CONTINUATION frames cannot go on for ever.
FRAME_HEAD_COST = 9


class Stream:
    """One gRPC call: the client's unread messages, our unsent replies, and both windows."""

    __slots__ = (
        "buffer",
        "closed",
        "ended",
        "filled",
        "headers_sent",
        "id",
        "inbox",
        "pending",
        "pending_bytes",
        "recv_unacked",
        "recv_window",
        "send_window",
        "task",
        "trailers",
        "waiter",
    )

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.id = stream_id
        self.inbox: deque[Message] = deque()
        self.buffer = bytearray()
        # Set while ``buffer`` is one large message made at its full size, its bytes filled in
        # as they come (``filled`` of them so far): it does not grow frame by frame, so no
        # reallocation leaves copies of its earlier sizes behind in the heap.
        self.filled = 0
        self.waiter: asyncio.Future[None] | None = None
        self.ended = False  # the client half-closed (or reset)
        self.send_window = send_window
        self.recv_unacked = 0
        self.recv_window = recv_window  # what the client may still send before a WINDOW_UPDATE
        self.headers_sent = False
        # gRPC-framed bytes waiting for flow-control window: the messages' own bytes (or views
        # of them), never copied into one buffer.
        self.pending: deque[bytes | memoryview] = deque()
        self.pending_bytes = 0
        self.trailers: bytes | None = None  # sent once ``pending`` drains
        self.task: asyncio.Task[None] | None = None
        self.closed = False  # our END_STREAM went out (or the stream was reset)

    @property
    def buffered(self) -> int:
        """Bytes received of a message not yet whole."""
        return self.filled or len(self.buffer)

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Requests:
    """The handler's view of the client's messages, in order, until it half-closes."""

    __slots__ = ("_connection", "_deserialize", "_deserialize_large", "_stream")

    def __init__(
        self,
        connection: Connection,
        stream: Stream,
        deserialize: Callable[[bytes], Any],
        deserialize_large: Callable[[memoryview], Any] | None = None,
    ) -> None:
        self._connection, self._stream, self._deserialize = connection, stream, deserialize
        # FromString-like deserializers read any buffer (see __anext__).
        self._deserialize_large = deserialize_large or cast(Callable[[memoryview], Any], deserialize)

    def __aiter__(self) -> Requests:
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
        if type(message) is memoryview:
            # A large message is a view of its buffer (frames.take_messages): protobuf's
            # FromString (upb) reads any buffer, as does every deserializer served here.
            return self._deserialize_large(message)
        return self._deserialize(cast(bytes, message))


Headers = Sequence[tuple[bytes, bytes]]
# Called for each new stream with its decoded request headers: starts its handler or finishes it.
StreamOpener = Callable[["Connection", Stream, Headers], None]


def _table_state(table: Any) -> tuple[int, int, object]:
    """What a decode can change in an HPACK dynamic table: its size limit, its entries."""
    entries = table.dynamic_entries
    return table.maxsize, len(entries), entries[0] if entries else None


class Connection(asyncio.Protocol):
    """One client connection (Envoy opens one per worker thread)."""

    # Slots, not an instance dict: past 30 attributes CPython stops sharing an instance dict's
    # keys, and every attribute read on the hot path got slower (~5% CPU per message, measured).
    __slots__ = (
        "_blocked",
        "_connection_window",
        "_continuation",
        "_continuation_cost",
        "_decoder",
        "_failed",
        "_flush_scheduled",
        "_going_away",
        "_header_cache",
        "_in",
        "_last_stream_id",
        "_limits",
        "_max_message",
        "_max_streams",
        "_new_stream_recv_window",
        "_on_close",
        "_open_stream",
        "_out",
        "_out_views",
        "_peer_initial_window",
        "_peer_max_frame",
        "_pings",
        "_preface_seen",
        "_premature_resets",
        "_recv_unacked",
        "_recv_window",
        "_reserved",
        "_send_window",
        "_settings_acked",
        "_settings_frames",
        "_stream_window",
        "_streams",
        "_table_size_update",
        "_transport",
        "idle",
        "loop",
    )

    def __init__(
        self,
        open_stream: StreamOpener,
        on_close: Callable[[Connection], None],
        max_message: int = MAX_MESSAGE,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._open_stream = open_stream
        self._limits = limits
        self._on_close = on_close
        self.loop = asyncio.get_running_loop()
        self._max_message = max_message
        self._stream_window = min(MAX_WINDOW, max_message + 5)
        # Never below HTTP/2's initial 65,535: a connection window cannot shrink.
        self._connection_window = max(
            DEFAULT_WINDOW, min(MAX_WINDOW, CONNECTION_WINDOW_MESSAGES * self._stream_window)
        )
        # What the client may still send: the connection window is ours from the start (our
        # WINDOW_UPDATE leaves with our SETTINGS); a stream's is HTTP/2's default until the
        # client acknowledges our SETTINGS, if that is larger (RFC 9113 §6.9.2).
        self._recv_window = self._connection_window
        self._settings_acked = False
        self._new_stream_recv_window = max(DEFAULT_WINDOW, self._stream_window)
        self._max_streams = limits.max_concurrent_streams
        self._transport: asyncio.Transport | None = None
        self._in = bytearray()
        self._preface_seen = False
        self._failed = False
        self._decoder = hpack.Decoder()
        self._decoder.max_header_list_size = limits.max_header_block
        self._header_cache: dict[bytes, tuple[tuple[bytes, bytes], ...]] = {}
        self._streams: dict[int, Stream] = {}
        self._last_stream_id = 0
        self._send_window = DEFAULT_WINDOW
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = DEFAULT_FRAME_SIZE
        self._table_size_update = False
        self._recv_unacked = 0  # bytes taken by handlers (or discarded) not yet handed back
        # Bytes of full-size message buffers (``_make_room``) not yet received: what the streams'
        # declared lengths made us allocate beyond what the peer sent. Bounded by the connection
        # window, so a peer declaring the largest message on every stream gains nothing.
        self._reserved = 0
        self._continuation: tuple[int, int, bytearray] | None = None  # (stream id, flags, block)
        self._continuation_cost = 0  # the block's bytes, and a frame head per CONTINUATION
        clock = self.loop.time
        self._premature_resets = Budget(limits.premature_resets, clock)
        self._pings = Budget(limits.pings, clock)
        self._settings_frames = Budget(limits.settings_frames, clock)
        self._out: list[bytes | memoryview] = []
        self._out_views = 0  # frames of pending data in ``_out`` (views: written without a join)
        self._flush_scheduled = False
        self._blocked: dict[int, Stream] = {}  # streams with pending data, in arrival order
        self._going_away = False
        self.idle = asyncio.Event()

    # ------------------------------------------------------------------ transport events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        self._write(
            frames.encode_settings(
                (INITIAL_WINDOW_SIZE, self._stream_window),
                (MAX_FRAME_SIZE, MAX_FRAME),
                (MAX_CONCURRENT_STREAMS, self._limits.max_concurrent_streams),
                (MAX_HEADER_LIST_SIZE, self._limits.max_header_block),
            )
        )
        if self._connection_window > DEFAULT_WINDOW:
            self._write(frames.encode_window_update(0, self._connection_window - DEFAULT_WINDOW))

    def pause_writing(self) -> None:
        """The peer is not reading what we send: stop reading what it sends (PINGs, new streams)."""
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._failed:
            return  # a connection error was answered: nothing more is read
        buf = self._in
        try:
            if self._preface_seen:
                # Frames are parsed from the read itself (a body of megabytes is not copied
                # through ``_in`` first): a frame the last read left partial is completed from
                # this one alone, and only a partial frame at its end is kept.
                rest = self._complete(buf, data) if buf else data
                taken = frames.parse(rest, self._on_frame, MAX_FRAME)
                if taken < len(rest):
                    buf += memoryview(rest)[taken:]
                return
            buf += data
            if not self._preface_seen:
                if len(buf) < len(PREFACE):
                    if not PREFACE.startswith(bytes(buf)):
                        raise ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 client preface")
                    return
                if buf[: len(PREFACE)] != PREFACE:
                    raise ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 client preface")
                self._preface_seen = True
                del buf[: len(PREFACE)]
            del buf[: frames.parse(buf, self._on_frame, MAX_FRAME)]
        except ProtocolError as exc:
            self._fail(exc.code, str(exc))

    def _complete(self, buf: bytearray, data: bytes) -> memoryview:
        """Completes the frame begun in ``buf`` (a read ended inside it) with the bytes it lacks
        from ``data``, and handles it; what follows in ``data``, to parse in place (nothing while
        the frame is still partial). Raises ProtocolError for a frame over our maximum size."""
        view = memoryview(data)
        missing = FRAME_HEAD.size - len(buf)
        if missing > 0:  # its head first
            buf += view[:missing]
            view = view[missing:]
            if len(buf) < FRAME_HEAD.size:
                return view
        length = FRAME_HEAD.unpack_from(buf)[0] >> 8
        if length > MAX_FRAME:
            raise ProtocolError(FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE")
        missing = FRAME_HEAD.size + length - len(buf)
        buf += view[:missing]
        if len(buf) < FRAME_HEAD.size + length:
            return view[len(view) :]
        del buf[: frames.parse(buf, self._on_frame, MAX_FRAME)]
        return view[missing:]

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
            self._write(frames.encode_goaway(self._last_stream_id, NO_ERROR))
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
                if not self._pings.spend():
                    raise ProtocolError(ENHANCE_YOUR_CALM, "PING flood")
                self._write(encode(PING, ACK, 0, bytes(payload)))
        elif kind == RST_STREAM:
            frames.rst_stream_code(stream_id, payload)
            stream = self._streams.pop(stream_id, None)
            if stream is not None:
                # Envoy resets every stream once its filter is done, after the answer; a
                # stream reset before any answer cost a handler for nothing (rapid reset).
                if not stream.headers_sent:
                    self._spend_premature_reset()
                self._cancel(stream)
                self._check_idle()
            elif stream_id > self._last_stream_id:
                raise ProtocolError(PROTOCOL_ERROR, "RST_STREAM on an idle stream")
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
        recv_window = self._recv_window = self._recv_window - frame_length
        if recv_window < 0:
            raise ProtocolError(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        if flags & PADDED:
            payload = frames.data_payload(payload)
        stream = self._streams.get(stream_id)
        if stream is None or stream.ended:
            if stream_id > self._last_stream_id:
                raise ProtocolError(PROTOCOL_ERROR, "DATA on an idle stream")
            self.consumed(None, frame_length)  # a stream we finished or reset: discarded
            return
        recv_window = stream.recv_window = stream.recv_window - frame_length
        if recv_window < 0:
            raise ProtocolError(FLOW_CONTROL_ERROR, "DATA beyond the stream window")
        # Padding is discarded now; the data is handed back as the handler takes it.
        self.consumed(stream, frame_length - len(payload))
        if stream.filled:
            self._fill(stream, flags, payload)
            return
        self._take(stream, flags, payload)

    def _take(self, stream: Stream, flags: int, payload: memoryview) -> None:
        """A DATA frame's data into the stream's buffer, and whatever messages it completes to its inbox."""
        buffer = stream.buffer
        buffer += payload
        try:
            rest = take_messages(buffer, stream.inbox, self._max_message)
        except MessageError as exc:
            self._refuse(stream, exc.code, str(exc))
            return
        delivered = rest is not None
        if rest is not None and rest is not buffer:
            stream.buffer = buffer = rest  # the old one went to the handler whole
        if len(buffer) >= 5:  # a message begun: a large one gets a buffer of its full size
            self._make_room(stream)
        if flags & END_STREAM:
            if stream.buffer:
                self._refuse(stream, GRPC_INTERNAL, "the request ended inside a message")
                return
            stream.ended = True
            delivered = True
        if delivered:
            stream.wake()

    def _make_room(self, stream: Stream) -> None:
        """A large message begun in ``stream.buffer`` (its head checked by ``take_messages``)
        moves to a buffer of its full size, filled from then on by :meth:`_fill`.

        Only while the bytes so reserved on the connection (declared, not yet received) stay
        within its window: a message head is 5 bytes, and without the bound a peer sending only
        heads would make every stream allocate (and zero) the largest message. Beyond it the
        buffer grows with what arrives, as for a small message, and tries again on the next frame."""
        buffer = stream.buffer
        size = 5 + MESSAGE_HEAD.unpack_from(buffer)[1]
        if size - 5 < HANDOVER_SIZE:
            return
        missing = size - len(buffer)
        if self._reserved + missing > self._connection_window:
            return
        self._reserved += missing
        whole = bytearray(size)
        whole[: len(buffer)] = buffer
        stream.buffer, stream.filled = whole, len(buffer)

    def _fill(self, stream: Stream, flags: int, payload: memoryview) -> None:
        """A DATA frame's data into the large message being filled (:meth:`_make_room`); once it is
        whole, it goes to the inbox as a view of its buffer, and the rest of the data (the start
        of the next message) is taken as any other."""
        whole, filled = stream.buffer, stream.filled
        end = min(len(whole), filled + len(payload))
        whole[filled:end] = payload[: end - filled]
        self._reserved -= end - filled
        if end < len(whole):
            stream.filled = end
            if flags & END_STREAM:
                self._refuse(stream, GRPC_INTERNAL, "the request ended inside a message")
            return
        stream.inbox.append(memoryview(whole)[5:])
        stream.buffer, stream.filled = bytearray(), 0
        self._take(stream, flags, payload[end - filled :])
        stream.wake()

    def consumed(self, stream: Stream | None, length: int) -> None:
        """Hand ``length`` bytes of window back once half a window is owed (rarely, for Envoy)."""
        if not length:
            return
        self._recv_unacked += length
        if self._recv_unacked >= self._connection_window // 2:
            self._write(frames.encode_window_update(0, self._recv_unacked))
            self._recv_window += self._recv_unacked
            self._recv_unacked = 0
        if stream is None or stream.ended:
            return  # the peer sends no more on it
        stream.recv_unacked += length
        if stream.recv_unacked >= self._stream_window // 2:
            self._write(frames.encode_window_update(stream.id, stream.recv_unacked))
            stream.recv_window += stream.recv_unacked
            stream.recv_unacked = 0

    def _release(self, stream: Stream) -> None:
        """Input no handler will take any more: its window goes back to the connection."""
        unread = stream.buffered + sum(5 + len(m) for m in stream.inbox)
        if stream.filled:  # a full-size buffer never filled: its reservation goes too
            self._reserved -= len(stream.buffer) - stream.filled
        stream.buffer = bytearray()  # a cleared buffer keeps its size: this one goes
        stream.filled = 0
        stream.inbox.clear()
        self.consumed(None, unread)

    def _on_headers(self, flags: int, stream_id: int, payload: memoryview) -> None:
        if stream_id == 0:
            raise ProtocolError(PROTOCOL_ERROR, "HEADERS on stream 0")
        block = frames.header_fragment(flags, payload)
        if len(block) > self._limits.max_header_block:
            raise ProtocolError(ENHANCE_YOUR_CALM, "header block too large")
        if flags & END_HEADERS:
            self._on_header_block(flags, stream_id, block)
        else:
            self._continuation = (stream_id, flags, block)
            self._continuation_cost = len(block)

    def _on_continuation(self, flags: int, stream_id: int, payload: memoryview) -> None:
        if self._continuation is None or self._continuation[0] != stream_id:
            raise ProtocolError(PROTOCOL_ERROR, "unexpected CONTINUATION")
        _, first_flags, block = self._continuation
        self._continuation_cost += FRAME_HEAD_COST + len(payload)
        if self._continuation_cost > self._limits.max_header_block:
            raise ProtocolError(ENHANCE_YOUR_CALM, "header block too large")
        block += payload
        if flags & END_HEADERS:
            self._continuation = None
            self._on_header_block(first_flags, stream_id, block)

    def _decode(self, block: bytes) -> Headers:
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
        except OversizedHeaderListError as exc:  # an HPACK bomb: a small block naming large entries
            raise ProtocolError(ENHANCE_YOUR_CALM, "header list too large") from exc
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
        if self._going_away:
            self._write(frames.encode_rst_stream(stream_id, REFUSED_STREAM))
            return
        if len(self._streams) >= self._max_streams:
            # The client went past the limit we advertised: no work done, like a premature reset.
            self._spend_premature_reset()
            self._write(frames.encode_rst_stream(stream_id, REFUSED_STREAM))
            return
        stream = Stream(stream_id, self._peer_initial_window, self._new_stream_recv_window)
        stream.ended = bool(flags & END_STREAM)
        self._streams[stream_id] = stream
        self.idle.clear()  # else ``Server.stop`` would not wait for this stream
        self._open_stream(self, stream, headers)

    def _spend_premature_reset(self) -> None:
        if not self._premature_resets.spend():
            raise ProtocolError(ENHANCE_YOUR_CALM, "too many streams reset or refused before any answer")

    def _on_window_update(self, stream_id: int, payload: memoryview) -> None:
        increment = frames.window_increment(payload)
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
            if not self._settings_acked:
                self._our_settings_acked()
            return
        pairs = frames.settings(payload)
        if len(pairs) > self._limits.max_settings_per_frame:
            raise ProtocolError(ENHANCE_YOUR_CALM, "too many entries in one SETTINGS frame")
        if not self._settings_frames.spend():
            raise ProtocolError(ENHANCE_YOUR_CALM, "SETTINGS flood")
        initial_window = None
        for ident, value in pairs:
            if ident == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolError(FLOW_CONTROL_ERROR, "initial window too large")
                initial_window = value  # the last one counts: the streams are walked once
            elif ident == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME_SIZE <= value <= LARGEST_FRAME_SIZE:
                    raise ProtocolError(PROTOCOL_ERROR, "bad max frame size")
                self._peer_max_frame = value
            elif ident == HEADER_TABLE_SIZE:
                # We never index, so our table is empty; say so in the next block.
                self._table_size_update = True
        grown: list[Stream] = []
        if initial_window is not None and initial_window != self._peer_initial_window:
            delta = initial_window - self._peer_initial_window
            self._peer_initial_window = initial_window
            for stream in self._streams.values():
                stream.send_window += delta
                if stream.send_window > MAX_WINDOW:
                    raise ProtocolError(FLOW_CONTROL_ERROR, "a stream window grew past 2^31-1")
                if delta > 0 and stream.pending:
                    grown.append(stream)
        self._write(encode(SETTINGS, ACK, 0))
        for stream in grown:
            self._send_pending(stream)

    def _our_settings_acked(self) -> None:
        """The client now counts our stream window, where it may have counted HTTP/2's default."""
        self._settings_acked = True
        self._new_stream_recv_window = self._stream_window
        shrink = max(DEFAULT_WINDOW, self._stream_window) - self._stream_window
        if shrink:
            for stream in self._streams.values():
                stream.recv_window -= shrink

    # ------------------------------------------------------------------ frames out
    def _header_block(self, block: bytes) -> bytes:
        if self._table_size_update:
            self._table_size_update = False
            return b"\x20" + block  # dynamic table size update to 0
        return block

    def send_message(self, stream: Stream, payload: bytes | list[bytes]) -> None:
        """One gRPC message on ``stream``: out now as far as the windows allow, the rest as they open.

        ``payload`` may come in pieces, which go out as they are (views), never joined."""
        if not stream.headers_sent:
            stream.headers_sent = True
            self._write(encode(HEADERS, END_HEADERS, stream.id, self._header_block(RESPONSE_HEADERS)))
        if isinstance(payload, list):
            length = sum(len(piece) for piece in payload)
            stream.pending.append(MESSAGE_HEAD.pack(0, length))
            stream.pending.extend(piece for piece in payload if piece)  # an empty one would stall it
            stream.pending_bytes += 5 + length
            self._send_pending(stream)
            return
        size = 5 + len(payload)
        if (
            not stream.pending
            and size <= self._peer_max_frame
            and size <= self._send_window
            and size <= stream.send_window
        ):
            # The usual message: one DATA frame, out with this iteration's other frames.
            self._send_window -= size
            stream.send_window -= size
            self._write(
                FRAME_HEAD.pack(size << 8 | DATA, 0, stream.id) + MESSAGE_HEAD.pack(0, size - 5) + payload
            )
            return
        stream.pending.append(MESSAGE_HEAD.pack(0, len(payload)))
        stream.pending.append(payload)
        stream.pending_bytes += size
        self._send_pending(stream)

    def finish(self, stream: Stream, trailers: bytes) -> None:
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

    def _send_trailers(self, stream: Stream) -> None:
        assert stream.trailers is not None
        # One frame: grpc-message is capped at 512 bytes (under 1.6 KB encoded), far below
        # the smallest frame size a peer may ask for (16 KiB).
        block = self._header_block(stream.trailers)
        self._write(encode(HEADERS, END_HEADERS | END_STREAM, stream.id, block))
        stream.closed = True
        self._forget(stream)

    def _send_pending(self, stream: Stream) -> None:
        pending = stream.pending
        while pending:
            allowed = min(stream.pending_bytes, self._send_window, stream.send_window, self._peer_max_frame)
            if allowed <= 0:
                # Only streams waiting on the connection's window queue here: a stream
                # waiting on its own resumes on its own WINDOW_UPDATE (or SETTINGS), so
                # a connection WINDOW_UPDATE never walks streams it cannot unblock.
                if stream.send_window > 0:
                    self._blocked[stream.id] = stream
                else:
                    self._blocked.pop(stream.id, None)
                return
            # The frame's head, then its data as views of the messages: a reply of megabytes
            # leaves in the peer's frame size (16 KiB for Envoy) without a copy of its bytes.
            out = self._out
            out.append(FRAME_HEAD.pack(allowed << 8 | DATA, 0, stream.id))
            need = allowed
            while need:
                piece = pending[0]
                if len(piece) <= need:
                    out.append(pending.popleft())
                    need -= len(piece)
                else:
                    view = piece if isinstance(piece, memoryview) else memoryview(piece)
                    out.append(view[:need])
                    pending[0] = view[need:]
                    need = 0
            self._out_views += 1
            self._schedule_flush()
            stream.pending_bytes -= allowed
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

    def _reset(self, stream: Stream, h2_code: int, reason: str) -> None:
        """An HTTP/2 stream error: RST_STREAM, and the handler stops."""
        log.warning("stream %d reset: %s", stream.id, reason)
        self._write(frames.encode_rst_stream(stream.id, h2_code))
        self._streams.pop(stream.id, None)
        self._cancel(stream)
        self._check_idle()

    def _refuse(self, stream: Stream, code: int, message: str) -> None:
        """A gRPC error on one stream (bad message framing): its status goes out, the handler stops."""
        log.warning("stream %d refused: %s", stream.id, message)
        stream.ended = True
        self._release(stream)
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        self.finish(stream, frames.status_trailers(code, message))

    def _cancel(self, stream: Stream) -> None:
        stream.closed = stream.ended = True
        self._blocked.pop(stream.id, None)
        self._release(stream)
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        stream.wake()

    def _forget(self, stream: Stream) -> None:
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
        self._failed = True
        self._write(frames.encode_goaway(self._last_stream_id, code, reason))
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def _write(self, data: bytes) -> None:
        """Replies made in one loop iteration leave together, in one write."""
        self._out.append(data)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if out and self._transport is not None and not self._transport.is_closing():
            if self._out_views:
                # Views of large replies among them: handed over as they are (uvloop writes
                # them with one writev, without joining them into one buffer first).
                self._transport.writelines(out)
            else:
                self._transport.write(b"".join(out))
        out.clear()
        self._out_views = 0
