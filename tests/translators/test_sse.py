"""The SSE parser against the WHATWG event-stream rules, and its bound on one event."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from ext_proc.translators.sse import SSEBuffer, parse_event

BOM = b"\xef\xbb\xbf"


def _feed(pieces: list[bytes], buffer: SSEBuffer | None = None) -> list[bytes]:
    buffer = buffer or SSEBuffer()
    out = [e.data for piece in pieces for e in buffer.feed(piece)]
    return out + [e.data for e in buffer.flush()]


def test_a_lone_cr_ends_a_line() -> None:
    assert _feed([b"data: a\r\rdata: b\r\r"]) == [b"a", b"b"]
    assert _feed([b"data: a\rdata: b\r\r"]) == [b"a\nb"]


def test_a_crlf_split_across_chunks_is_one_line_end() -> None:
    assert _feed([b"data: a\r", b"\ndata: b\r\n\r\n"]) == [b"a\nb"]
    assert _feed([b"data: a\r\n\r", b"\n", b"data: b\r\n\r\n"]) == [b"a", b"b"]


def test_one_leading_bom_is_dropped_even_split() -> None:
    assert _feed([BOM + b"data: a\n\n"]) == [b"a"]
    assert _feed([BOM[:1], BOM[1:2], BOM[2:] + b"data: a\n\n"]) == [b"a"]
    # Only the first: a second BOM is part of the first line's field name, so no data.
    assert _feed([BOM + BOM + b"data: a\n\ndata: b\n\n"]) == [b"b"]


def test_bytes_that_are_not_utf8_become_replacement_characters() -> None:
    events = list(SSEBuffer().feed(b"event: x\xff\ndata: caf\xe9 \xc3\xa9\n\n"))
    assert events[0].event == "x\ufffd"
    assert events[0].data == "caf\ufffd é".encode()
    assert events[0].data.decode() and b"\xe9 " not in events[0].raw  # what is passed on is UTF-8 too


def test_an_event_without_data_is_not_dispatched() -> None:
    assert parse_event(b"event: ping\n\n") is None
    assert _feed([b"event: ping\n\n: comment\n\ndata\n\n"]) == [b""]  # "data" alone: one empty line


def test_an_event_over_the_bound_sets_overflowed_and_the_rest_is_ignored() -> None:
    buffer = SSEBuffer(max_event_bytes=1024)
    first = [e.data for e in buffer.feed(b"data: a\n\ndata: " + b"x" * 600)]
    assert first == [b"a"] and not buffer.overflowed
    assert list(buffer.feed(b"x" * 600)) == [] and buffer.overflowed
    assert list(buffer.feed(b"\n\ndata: b\n\n")) == [] and list(buffer.flush()) == []


def test_a_long_event_is_scanned_once_not_per_chunk() -> None:
    """16 MiB in 1 KiB chunks: re-scanning the tail per chunk would copy ~128 GiB."""
    buffer = SSEBuffer(max_event_bytes=32 * 1024 * 1024)
    piece = b"y" * 1024
    began = time.monotonic()
    assert list(buffer.feed(b"data: ")) == []
    for _ in range(16 * 1024):
        for _event in buffer.feed(piece):
            raise AssertionError("no event ends here")
    events = list(buffer.feed(b"\n\n"))
    assert len(events[0].data) == 16 * 1024 * 1024
    assert time.monotonic() - began < 20  # linear: well under a second on any machine


_TEXT = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20)


@given(
    st.lists(st.lists(_TEXT, min_size=1, max_size=3), min_size=1, max_size=5),
    st.sampled_from([b"\n", b"\r", b"\r\n"]),
    st.booleans(),
    st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_any_stream_split_anywhere_parses_to_its_events(
    events: list[list[str]], eol: bytes, bom: bool, cuts: list[int]
) -> None:
    wire = BOM if bom else b""
    for lines in events:
        wire += b"".join(b"data: " + line.encode() + eol for line in lines) + eol
    points = sorted({min(c, len(wire)) for c in cuts})
    pieces = [wire[a:b] for a, b in zip([0, *points], [*points, len(wire)], strict=True)]
    expected = [b"\n".join(line.encode() for line in lines) for lines in events]
    assert _feed(pieces) == expected


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_any_bytes_never_raise(pieces: list[bytes]) -> None:
    buffer = SSEBuffer(max_event_bytes=128)
    for piece in pieces:
        for event in buffer.feed(piece):
            event.data.decode()  # always valid UTF-8
    for event in buffer.flush():
        event.data.decode()
