"""HTTP/2 frames and gRPC messages as bytes: the numbers of RFC 9113, parsing and encoding.

Pure functions and constants, no connection state: :mod:`.connection` keeps the state
and calls these. The parser hands out views into the read buffer rather than copies;
whoever keeps a payload copies it.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6) and the flags used here.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

# Settings identifiers.
HEADER_TABLE_SIZE, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 0x1, 0x3, 0x4, 0x5
MAX_HEADER_LIST_SIZE = 0x6

# Error codes.
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR = 0x0, 0x1, 0x3, 0x6
REFUSED_STREAM, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x7, 0x9, 0xB

# gRPC status codes sent by the server itself.
GRPC_OK, GRPC_RESOURCE_EXHAUSTED, GRPC_UNIMPLEMENTED, GRPC_INTERNAL = 0, 8, 12, 13
GRPC_UNAUTHENTICATED = 16

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535
DEFAULT_FRAME_SIZE = 16_384
LARGEST_FRAME_SIZE = 2**24 - 1  # the most SETTINGS_MAX_FRAME_SIZE may say

FRAME_HEAD = struct.Struct(">I B I")  # (length << 8 | type), flags, stream id
U32 = struct.Struct(">I")
MESSAGE_HEAD = struct.Struct(">B I")  # gRPC: compressed flag, length
_SETTING = struct.Struct(">H I")


class ProtocolError(Exception):
    """A connection error (RFC 9113 §5.4.1): the connection answers it with GOAWAY ``code`` and closes."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class MessageError(Exception):
    """A stream's gRPC messages are malformed: the stream ends with gRPC status ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------- HTTP/2 in

FrameHandler = Callable[[int, int, int, memoryview], None]


def parse(buf: bytes | bytearray | memoryview, on_frame: FrameHandler, max_length: int) -> int:
    """Hands each whole frame at the start of ``buf`` to ``on_frame(type, flags, stream id, payload)``.

    Returns how many bytes those frames took (the caller drops them); a partial frame
    stays for the next read. ``payload`` is a view into ``buf``, valid during the call.
    One call per read, not per frame: the loop is the hot path.
    """
    offset, size = 0, len(buf)
    view = memoryview(buf)
    try:
        while size - offset >= 9:
            head, flags, stream_id = FRAME_HEAD.unpack_from(buf, offset)
            length = head >> 8
            if length > max_length:
                raise ProtocolError(FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE")
            end = offset + 9 + length
            if end > size:
                break
            on_frame(head & 0xFF, flags, stream_id & 0x7FFFFFFF, view[offset + 9 : end])
            offset = end
    finally:
        view.release()
    return offset


def data_payload(payload: memoryview) -> memoryview:
    """A PADDED DATA frame's data: the pad length byte and the padding removed."""
    if not payload:
        raise ProtocolError(PROTOCOL_ERROR, "padded frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise ProtocolError(PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - pad]


def header_fragment(flags: int, payload: memoryview) -> bytearray:
    """A HEADERS frame's part of the header block: padding and priority fields removed."""
    start, end = 0, len(payload)
    if flags & PADDED:
        if not payload:
            raise ProtocolError(PROTOCOL_ERROR, "padded frame without a pad length")
        start, end = 1, end - payload[0]
    if flags & PRIORITY_FLAG:
        start += 5
    if start > end:
        raise ProtocolError(PROTOCOL_ERROR, "padding longer than the frame")
    return bytearray(payload[start:end])


def settings(payload: memoryview) -> list[tuple[int, int]]:
    """A SETTINGS frame's (identifier, value) pairs, in order."""
    if len(payload) % 6:
        raise ProtocolError(FRAME_SIZE_ERROR, "bad SETTINGS length")
    return [_SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6)]


def rst_stream_code(stream_id: int, payload: memoryview) -> int:
    if len(payload) != 4:
        raise ProtocolError(FRAME_SIZE_ERROR, "bad RST_STREAM")
    if not stream_id:
        raise ProtocolError(PROTOCOL_ERROR, "RST_STREAM on stream 0")
    return int(U32.unpack(payload)[0])


def window_increment(payload: memoryview) -> int:
    if len(payload) != 4:
        raise ProtocolError(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
    return int(U32.unpack(payload)[0] & 0x7FFFFFFF)


# ---------------------------------------------------------------------------- HTTP/2 out


def encode(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return FRAME_HEAD.pack(len(payload) << 8 | kind, flags, stream_id) + payload


def encode_settings(*pairs: tuple[int, int]) -> bytes:
    return encode(SETTINGS, 0, 0, b"".join(_SETTING.pack(ident, value) for ident, value in pairs))


def encode_goaway(last_stream_id: int, code: int, reason: str = "") -> bytes:
    return encode(GOAWAY, 0, 0, struct.pack(">II", last_stream_id, code) + reason.encode()[:256])


def encode_rst_stream(stream_id: int, code: int) -> bytes:
    return encode(RST_STREAM, 0, stream_id, U32.pack(code))


def encode_window_update(stream_id: int, increment: int) -> bytes:
    return encode(WINDOW_UPDATE, 0, stream_id, U32.pack(increment))


# ---------------------------------------------------------------------------- gRPC messages


# A message at least this large, alone in its stream's buffer, is handed to the handler as a
# view of that buffer instead of a copy (the stream reads on into a new buffer): a request
# body of megabytes is then copied once on its way in (frame payloads into the buffer), not
# three times. Smaller ones are copied out to ``bytes``, the cheaper object to hold.
HANDOVER_SIZE = 64 * 1024

Message = bytes | memoryview  # a gRPC message's bytes, as the deserializer gets them


def take_messages(buffer: bytearray, inbox: deque[Message], max_message: int) -> bytearray | None:
    """Moves every whole length-prefixed message from the start of ``buffer`` to ``inbox``.

    Returns None when none was whole; else the buffer to go on reading into: ``buffer``
    itself (a partial message stays at its start), or a new one when ``buffer`` held
    exactly one large message and was handed over whole as its view (a view pins its
    bytearray's size: nothing may be appended to it any more). Raises
    :class:`MessageError` for a compressed message (never negotiated) or one over
    ``max_message`` bytes, as soon as its prefix says so: it is never buffered whole.
    """
    delivered = False
    while len(buffer) >= 5:
        compressed, length = MESSAGE_HEAD.unpack_from(buffer)
        if compressed:
            raise MessageError(GRPC_UNIMPLEMENTED, "compressed messages are not supported")
        if length > max_message:
            raise MessageError(GRPC_RESOURCE_EXHAUSTED, f"message larger than {max_message} bytes")
        end = 5 + length
        size = len(buffer)
        if size < end:
            break
        if size == end and length >= HANDOVER_SIZE:
            inbox.append(memoryview(buffer)[5:])
            return bytearray()
        with memoryview(buffer) as view:
            inbox.append(bytes(view[5:end]))
        del buffer[:end]
        delivered = True
    return buffer if delivered else None


def never_indexed(*fields: tuple[bytes, bytes]) -> bytes:
    """An HPACK block of never-indexed fields: the peer's table never changes, so the
    blocks can be built once and sent on any connection in any order."""
    encoder = hpack.Encoder()
    return bytes(encoder.encode([hpack.NeverIndexedHeaderTuple(n, v) for n, v in fields], huffman=False))


def status_trailers(code: int, message: str) -> bytes:
    """The trailers that end a call with gRPC status ``code`` (and ``message``, at most 512 bytes)."""
    fields = [(b"grpc-status", str(code).encode())]
    if message:
        # grpc-message: UTF-8, with bytes outside printable ASCII (and "%") percent-encoded.
        raw = message.encode()[:512]
        text = "".join(chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in raw)
        fields.append((b"grpc-message", text.encode("ascii")))
    return never_indexed(*fields)


RESPONSE_HEADERS = never_indexed((b":status", b"200"), (b"content-type", b"application/grpc"))
OK_TRAILERS = status_trailers(GRPC_OK, "")
