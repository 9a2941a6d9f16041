"""ext_proc/h2_grpc/frames.py against hyperframe and hpack, independent encoders of the same RFCs.

Properties over arbitrary frames, arbitrary message sizes and arbitrary splits of the
byte stream: what hyperframe serializes, ``parse`` splits back into the same frames
whatever the reads' boundaries, and ``encode`` reproduces byte for byte; gRPC messages
framed by hand come out of ``take_messages`` exactly, however they are cut.
"""

from __future__ import annotations

import random
from collections import deque
from urllib.parse import unquote_to_bytes

import hpack
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from ext_proc.h2_grpc import frames
from ext_proc.h2_grpc.frames import MessageError, ProtocolError

STREAM_IDS = st.integers(min_value=1, max_value=2**31 - 1)
# Small ones, and ones around the 16 KiB default frame size (random bytes from a seed: drawing
# 16 KiB byte by byte would make hypothesis slow).
PAYLOADS = st.binary(max_size=300) | st.builds(
    lambda size, seed: random.Random(seed).randbytes(size), st.integers(16_380, 16_390), st.integers()
)
# hyperframe writes a setting's identifier as ``id & 0xFF``: beyond 255 it is no reference.
SETTING_IDS = st.integers(0, 255)
PADS = st.none() | st.integers(min_value=0, max_value=255)


@st.composite
def hyperframes(draw: st.DrawFn) -> Frame:
    """Any frame a client may send, with the optional fields (padding, priority, ACK) drawn too."""
    kind = draw(
        st.sampled_from(
            ["data", "headers", "continuation", "settings", "ping", "window", "rst", "goaway", "priority"]
        )
    )
    sid = draw(STREAM_IDS)
    if kind == "data":
        frame: Frame = DataFrame(sid, draw(PAYLOADS), flags=draw(st.sets(st.just("END_STREAM"))))
        if (pad := draw(PADS)) is not None:
            frame.flags.add("PADDED")
            frame.pad_length = pad  # type: ignore[attr-defined]
    elif kind == "headers":
        frame = HeadersFrame(
            sid, draw(PAYLOADS), flags=draw(st.sets(st.sampled_from(["END_STREAM", "END_HEADERS"])))
        )
        if (pad := draw(PADS)) is not None:
            frame.flags.add("PADDED")
            frame.pad_length = pad  # type: ignore[attr-defined]
        if draw(st.booleans()):
            frame.flags.add("PRIORITY")
            frame.depends_on, frame.stream_weight = draw(STREAM_IDS), draw(st.integers(0, 255))  # type: ignore[attr-defined]
    elif kind == "continuation":
        frame = ContinuationFrame(sid, draw(PAYLOADS), flags=draw(st.sets(st.just("END_HEADERS"))))
    elif kind == "settings":
        if draw(st.booleans()):
            frame = SettingsFrame(0, flags=["ACK"])
        else:
            pairs = draw(st.dictionaries(SETTING_IDS, st.integers(0, 2**32 - 1), max_size=8))
            frame = SettingsFrame(0, settings=pairs)
    elif kind == "ping":
        frame = PingFrame(0, draw(st.binary(min_size=8, max_size=8)), flags=draw(st.sets(st.just("ACK"))))
    elif kind == "window":
        frame = WindowUpdateFrame(draw(st.integers(0, 2**31 - 1)), draw(st.integers(1, 2**31 - 1)))
    elif kind == "rst":
        frame = RstStreamFrame(sid, draw(st.integers(0, 2**32 - 1)))
    elif kind == "goaway":
        frame = GoAwayFrame(
            0, draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**32 - 1)), draw(st.binary(max_size=40))
        )
    else:
        frame = PriorityFrame(sid, draw(STREAM_IDS), draw(st.integers(0, 255)), draw(st.booleans()))
    return frame


def cut(data: bytes, rng: random.Random, largest: int) -> list[bytes]:
    """``data`` in pieces of 1..``largest`` bytes, mostly short, some long: reads whose
    boundaries fall anywhere (inside a frame head, a message prefix, a payload)."""
    pieces, at = [], 0
    while at < len(data):
        step = rng.randint(1, rng.choice([9, 100, largest]))
        pieces.append(data[at : at + step])
        at += step
    return pieces


@settings(max_examples=100, deadline=None)
@given(
    st.lists(hyperframes(), max_size=8),
    st.randoms(use_true_random=False),
    st.sampled_from([1, 20_000]),
)
def test_any_frames_cut_anywhere_parse_back_to_the_same_frames(
    sent: list[Frame], rng: random.Random, largest: int
) -> None:
    wire = [frame.serialize() for frame in sent]
    got: list[tuple[int, int, int, bytes]] = []
    buf = bytearray()

    def collect(kind: int, flags: int, stream_id: int, payload: memoryview) -> None:
        got.append((kind, flags, stream_id, bytes(payload)))

    for piece in cut(b"".join(wire), rng, largest):
        buf += piece
        del buf[: frames.parse(buf, collect, 1 << 20)]
    assert buf == b""  # nothing left over, nothing made up
    assert [(kind, sid) for kind, _, sid, _ in got] == [(f.type, f.stream_id) for f in sent]
    # Re-encoded, each is the very frame hyperframe wrote: flags and payload were read exactly.
    assert [frames.encode(*frame) for frame in got] == wire


@given(hyperframes())
def test_frame_fields_read_as_hyperframe_wrote_them(frame: Frame) -> None:
    ((_, flags, _, payload),) = parsed(frame.serialize())
    view = memoryview(payload)
    if isinstance(frame, DataFrame):
        data = frames.data_payload(view) if flags & frames.PADDED else view
        assert bytes(data) == frame.data
    elif isinstance(frame, HeadersFrame):
        assert frames.header_fragment(flags, view) == frame.data
    elif isinstance(frame, SettingsFrame):
        assert frames.settings(view) == list(frame.settings.items())
    elif isinstance(frame, WindowUpdateFrame):
        assert frames.window_increment(view) == frame.window_increment


def parsed(data: bytes) -> list[tuple[int, int, int, bytes]]:
    got: list[tuple[int, int, int, bytes]] = []
    taken = frames.parse(bytearray(data), lambda *f: got.append((f[0], f[1], f[2], bytes(f[3]))), 1 << 24)
    assert taken == len(data)
    return got


@given(st.integers(0, 2**31 - 1), st.integers(0, 2**32 - 1), st.text(max_size=300))
def test_goaway_rst_and_window_update_are_what_hyperframe_reads(last: int, code: int, reason: str) -> None:
    (goaway,) = hyper(frames.encode_goaway(last, code, reason))
    assert isinstance(goaway, GoAwayFrame)
    assert (goaway.last_stream_id, goaway.error_code) == (last, code)
    assert goaway.additional_data == reason.encode()[:256]  # capped: a GOAWAY stays small
    (rst,) = hyper(frames.encode_rst_stream(last or 1, code))
    assert isinstance(rst, RstStreamFrame) and (rst.stream_id, rst.error_code) == (last or 1, code)
    increment = max(1, code >> 1)
    (update,) = hyper(frames.encode_window_update(last, increment))
    assert isinstance(update, WindowUpdateFrame)
    assert (update.stream_id, update.window_increment) == (last, increment)


@given(st.lists(st.tuples(SETTING_IDS, st.integers(0, 2**32 - 1)), max_size=10))
def test_our_settings_are_what_hyperframe_reads(pairs: list[tuple[int, int]]) -> None:
    (frame,) = hyper(frames.encode_settings(*pairs))
    assert isinstance(frame, SettingsFrame) and list(frame.settings.items()) == list(dict(pairs).items())


def hyper(data: bytes) -> list[Frame]:
    out = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        out.append(frame)
        data = data[9 + length :]
    return out


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"", "padded frame without a pad length"), (b"\x03ab", "padding longer than the frame")],
)
def test_bad_padding_is_a_protocol_error(payload: bytes, reason: str) -> None:
    for strip in (frames.data_payload, lambda p: frames.header_fragment(frames.PADDED, p)):
        with pytest.raises(ProtocolError, match=reason) as error:
            strip(memoryview(payload))
        assert error.value.code == frames.PROTOCOL_ERROR


def test_a_frame_over_the_limit_is_refused_from_its_head_alone() -> None:
    """The 9-byte head is enough: a peer cannot make the server buffer a frame it would refuse."""
    head = frames.FRAME_HEAD.pack((1 << 20) + 1 << 8 | frames.DATA, 0, 1)
    with pytest.raises(ProtocolError) as error:
        frames.parse(bytearray(head), lambda *_: None, 1 << 20)
    assert error.value.code == frames.FRAME_SIZE_ERROR


# ---------------------------------------------------------------------------- gRPC messages

# Sizes around the boundaries that matter: empty, HTTP/2's default frame (16 KiB) and window (64 KiB).
SIZES = st.sampled_from([0, 1, 4, 5, 16_379, 16_384, 16_389, 65_530, 65_535, 65_536, 100_000]) | st.integers(
    0, 3_000
)


def grpc_frame(message: bytes) -> bytes:
    """Independent of frames.py: the gRPC length-prefixed message, per the gRPC HTTP/2 spec."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


@settings(max_examples=100, deadline=None)
@given(st.lists(SIZES, max_size=8), st.randoms(use_true_random=False), st.sampled_from([1, 70_000]))
def test_messages_cut_anywhere_come_out_whole_and_in_order(
    sizes: list[int], rng: random.Random, largest: int
) -> None:
    messages = [rng.randbytes(size) for size in sizes]
    buffer, inbox = bytearray(), deque[frames.Message]()
    for piece in cut(b"".join(grpc_frame(m) for m in messages), rng, largest):
        buffer += piece
        before = len(inbox)
        rest = frames.take_messages(buffer, inbox, 100_000)
        assert (rest is not None) == (len(inbox) > before)
        if rest is not None:
            buffer = rest
    assert list(inbox) == messages and buffer == b""


def test_a_large_message_alone_in_its_buffer_is_handed_over_not_copied() -> None:
    """A request body of megabytes is not copied out of the stream's buffer: the handler gets a
    view of that buffer, and the stream reads on into a new one."""
    message = bytes(range(256)) * 1024
    buffer = bytearray(grpc_frame(message))
    inbox = deque[frames.Message]()
    rest = frames.take_messages(buffer, inbox, 1 << 20)
    assert rest is not None and rest is not buffer and rest == b""
    (taken,) = inbox
    assert isinstance(taken, memoryview) and taken.obj is buffer and taken == message
    # A small one, or one with more bytes behind it, is copied out as before.
    buffer = bytearray(grpc_frame(message) + grpc_frame(b"next")[:3])
    rest = frames.take_messages(buffer, inbox, 1 << 20)
    assert rest is buffer and isinstance(inbox[-1], bytes) and buffer == grpc_frame(b"next")[:3]


@given(st.integers(1001, 2**32 - 1), st.integers(5, 20))
def test_a_message_over_the_limit_is_refused_from_its_prefix(length: int, have: int) -> None:
    """Refused once the 5-byte prefix is in, before its body: never buffered whole."""
    buffer = bytearray((b"\x00" + length.to_bytes(4, "big") + b"x" * 20)[:have])
    with pytest.raises(MessageError, match="message larger than 1000 bytes") as error:
        frames.take_messages(buffer, deque(), 1000)
    assert error.value.code == frames.GRPC_RESOURCE_EXHAUSTED


def test_a_compressed_message_is_refused() -> None:
    with pytest.raises(MessageError) as error:
        frames.take_messages(bytearray(b"\x01\x00\x00\x00\x01x"), deque(), 1000)
    assert error.value.code == frames.GRPC_UNIMPLEMENTED


@given(st.integers(0, 16), st.text())
def test_status_trailers_carry_the_code_and_the_message_percent_encoded(code: int, message: str) -> None:
    fields = dict(hpack.Decoder().decode(frames.status_trailers(code, message), raw=True))
    assert fields[b"grpc-status"] == str(code).encode()
    if not message:
        assert b"grpc-message" not in fields
        return
    sent = fields[b"grpc-message"]
    assert all(0x20 <= b <= 0x7E for b in sent)  # an HTTP/2 field value a proxy passes on
    assert unquote_to_bytes(sent) == message.encode()[:512]
