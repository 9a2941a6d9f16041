"""A large request body is taken from its message as a view, and everything else is what upb parses.

What matters: the result is always the message ``FromString`` gives (the body's bytes, every
other field), the body is a view of the buffer it came in (no copy), and anything but the plain
encoding (a repeated field, which protobuf merges; bytes upb refuses) is left to upb whole.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from ext_proc import protowire
from ext_proc.received import SPLIT_SIZE, Received, ReceivedBody, parse

_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)


def _large(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + b"x" * (size % 256)


def _request_body(body: bytes, end_of_stream: bool = True) -> ep.ProcessingRequest:
    request = ep.ProcessingRequest()
    request.request_body.body = body
    request.request_body.end_of_stream = end_of_stream
    return request


def _as_upb_parses(result: ep.ProcessingRequest | Received) -> ep.ProcessingRequest:
    """The message a :class:`Received` stands for: its body put back."""
    if isinstance(result, ep.ProcessingRequest):
        return result
    whole = ep.ProcessingRequest()
    whole.CopyFrom(result.message)
    whole.request_body.body = result.request_body.body.tobytes()
    return whole


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 300) | st.integers(SPLIT_SIZE - 40, SPLIT_SIZE + 200_000),
    end_of_stream=st.booleans(),
    attributes=st.dictionaries(_TEXT, _TEXT, max_size=3),
    observability=st.booleans(),
    metadata=st.dictionaries(_TEXT, _TEXT, max_size=2),
    end_without_message=st.booleans(),
)
def test_the_request_is_what_upb_parses_and_a_large_body_a_view_of_its_buffer(
    size: int,
    end_of_stream: bool,
    attributes: dict[str, str],
    observability: bool,
    metadata: dict[str, str],
    end_without_message: bool,
) -> None:
    request = _request_body(_large(size), end_of_stream)  # made, not drawn: hypothesis caps bytes
    request.request_body.end_of_stream_without_message = end_without_message
    for key, value in attributes.items():
        request.attributes[key].fields["v"].string_value = value
    request.observability_mode = observability
    for key, value in metadata.items():
        request.metadata_context.filter_metadata["infery"].fields[key].string_value = value
    wire = bytearray(request.SerializeToString())
    view = memoryview(wire)  # as the HTTP/2 server hands a large message over
    result = parse(view)
    assert _as_upb_parses(result) == ep.ProcessingRequest.FromString(bytes(wire)) == request
    assert isinstance(result, Received) == (len(wire) >= SPLIT_SIZE)
    if isinstance(result, Received):
        assert result.message.WhichOneof("request") == "request_body"
        assert result.message.request_body.body == b""
        assert result.request_body == ReceivedBody(result.request_body.body, end_of_stream)
        assert result.request_body.body.obj is wire  # the buffer itself, not a copy
        assert result.request_body.body.readonly


def test_small_messages_and_other_phases_are_upbs_own() -> None:
    small = _request_body(b'{"model":"m"}')
    assert parse(small.SerializeToString()) == small
    headers = ep.ProcessingRequest()
    headers.request_headers.headers.headers.add(key="x-large", raw_value=_large(SPLIT_SIZE))
    assert parse(memoryview(headers.SerializeToString())) == headers
    response = ep.ProcessingRequest()
    response.response_body.body = _large(SPLIT_SIZE)
    assert parse(memoryview(response.SerializeToString())) == response


def _field(number: int, payload: bytes) -> bytes:
    key = protowire.encode_varint(number << 3 | protowire.LEN)
    return key + protowire.encode_varint(len(payload)) + payload


@pytest.mark.parametrize(
    "wire",
    [
        # request_body twice: protobuf merges them (the last body wins, end_of_stream stays)
        _field(4, _field(1, b"a" * SPLIT_SIZE) + b"\x10\x01") + _field(4, _field(1, b"b" * SPLIT_SIZE)),
        # body twice in one request_body: the last one wins
        _field(4, _field(1, b"a" * SPLIT_SIZE) + _field(1, b"b" * 10)),
        # another member of the oneof after the body: it is the one set
        _field(4, _field(1, b"a" * SPLIT_SIZE)) + _field(2, b""),
        # no body at all, with a large other field
        _field(4, b"\x10\x01") + _field(9, _field(1, b"k") + _field(2, b"")) + b"\x50\x01",
    ],
)
def test_anything_but_the_plain_encoding_is_parsed_by_upb_whole(wire: bytes) -> None:
    result = parse(memoryview(wire))
    assert isinstance(result, ep.ProcessingRequest)
    assert result == ep.ProcessingRequest.FromString(wire)


@pytest.mark.parametrize(
    "wire",
    [
        _field(4, _field(1, b"a" * SPLIT_SIZE))[:-1],  # cut short
        _field(4, _field(1, b"a" * SPLIT_SIZE)) + b"\x0b",  # a group's start: wire type 3
        _field(4, _field(1, b"a" * SPLIT_SIZE)) + b"\x80" * 11,  # a varint past 10 bytes
        b"\x02" + _field(4, _field(1, b"a" * SPLIT_SIZE)),  # field number 0
    ],
)
def test_a_malformed_message_is_refused_as_upb_refuses_it(wire: bytes) -> None:
    with pytest.raises(DecodeError):
        ep.ProcessingRequest.FromString(wire)
    with pytest.raises(DecodeError):
        parse(memoryview(wire))


def test_the_body_is_whatever_bytes_came_and_the_rest_of_the_message_is_kept() -> None:
    request = _request_body(b"\xff\x00" * SPLIT_SIZE, end_of_stream=False)  # not UTF-8: bytes field
    request.protocol_config.request_body_mode = 1
    request.metadata_context.filter_metadata["a"].fields["b"].string_value = "c"
    result = parse(memoryview(request.SerializeToString()))
    assert isinstance(result, Received)
    assert result.request_body.body == b"\xff\x00" * SPLIT_SIZE and not result.request_body.end_of_stream
    assert result.message.protocol_config.request_body_mode == 1
    assert result.message.metadata_context.filter_metadata["a"].fields["b"].string_value == "c"


def test_fields_walks_a_message_and_refuses_what_is_not_one() -> None:
    wire = b"\x08\x96\x01" + _field(2, b"abc") + b"\x1d\x00\x00\x00\x00" + b"\x21" + b"\x00" * 8
    assert [(f.number, f.wire) for f in protowire.fields(wire)] == [(1, 0), (2, 2), (3, 5), (4, 1)]
    second = list(protowire.fields(wire))[1]
    assert (second.start, second.length_at, second.content, second.end) == (3, 4, 5, 8)
    assert protowire.varint(b"\x96\x01", 0) == (150, 2)
    assert protowire.encode_varint(150) == b"\x96\x01"
    for bad in (b"\x08", b"\x12\x05ab", b"\x1d\x00", b"\x0b", b"\x00\x01", b"\x08" + b"\xff" * 11):
        with pytest.raises(ValueError):
            list(protowire.fields(bad))


def _padded(value: int, size: int) -> bytes:
    """``value`` as a varint of at least ``size`` bytes (zero groups after it: what protobuf
    reads as the same value, up to the varint's own limit)."""
    out = bytearray(protowire.encode_varint(value))
    if len(out) < size:
        out[-1] |= 0x80
        out += b"\x80" * (size - len(out) - 1) + b"\x00"
    return bytes(out)


def _crafted_field(number: int, wire: int, payload: bytes, key_size: int, length_size: int) -> bytes:
    key = _padded(number << 3 | wire, key_size)
    if wire == protowire.LEN:
        return key + _padded(len(payload), length_size) + payload
    return key + payload


_VARINT_SIZE = st.sampled_from([1] * 12 + [2, 5, 6, 10, 11])  # mostly plain: a few per message
# Fields neither parser is asked for: unknown numbers, every wire type (groups' start and end
# included), and members of ProcessingRequest that are not in the ``request`` oneof.
_OTHER_FIELD = st.tuples(
    st.sampled_from([3, 7, 10, 15, 99, 2**29 - 1]),
    st.sampled_from([protowire.VARINT, protowire.I64, protowire.LEN, 3, 4, protowire.I32]),
    _VARINT_SIZE,
).map(
    lambda f: _crafted_field(
        f[0],
        f[1],
        {protowire.VARINT: b"\x01", protowire.I64: b"\x00" * 8, protowire.I32: b"\x00" * 4}.get(f[1], b"xy"),
        f[2],
        1,
    )
)


class _Crafted(bytes):
    """A crafted message, shown by its edges (a failing example is not 200 KB of body)."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes: {self[:24].hex()}...{self[-24:].hex()}>"


@st.composite
def _crafted_requests(draw: st.DrawFn) -> _Crafted:
    """A ProcessingRequest with a large request body as a hostile peer could encode it: keys and
    lengths padded (up to past protobuf's limits), fields of any wire type around the body, the
    body or its message repeated, another ``request`` member, a wrong wire type, a cut."""
    size = draw(st.sampled_from([SPLIT_SIZE, SPLIT_SIZE + 1, 3 * SPLIT_SIZE]))
    inner_fields = [
        _crafted_field(
            1,
            draw(st.sampled_from([protowire.LEN] * 6 + [protowire.I32])),
            _large(size),
            draw(_VARINT_SIZE),
            draw(_VARINT_SIZE),
        )
    ]
    inner_fields += draw(st.lists(_OTHER_FIELD | st.just(b"\x10\x01") | st.just(b"\x0a\x02ab"), max_size=3))
    inner = b"".join(draw(st.permutations(inner_fields)))
    outer_fields = [_crafted_field(4, protowire.LEN, inner, draw(_VARINT_SIZE), draw(_VARINT_SIZE))]
    outer_fields += draw(
        st.lists(
            _OTHER_FIELD | st.sampled_from([_field(2, b""), _field(4, b"\x10\x01"), b"\x50\x01"]), max_size=3
        )
    )
    wire = b"".join(draw(st.permutations(outer_fields)))
    cut = draw(st.sampled_from([0] * 8 + [1, 3]))
    return _Crafted(wire[: len(wire) - cut])


@settings(max_examples=300, deadline=None)
@given(_crafted_requests())
def test_a_crafted_encoding_parses_as_upb_parses_it_or_is_refused_as_upb_refuses_it(wire: _Crafted) -> None:
    """The hand parse sees the body's key and length, and the request_body's length, which upb
    then never reads: each must be read exactly as upb would read it, or left to upb."""
    try:
        expected = ep.ProcessingRequest.FromString(wire)
    except DecodeError:
        with pytest.raises(DecodeError):
            parse(memoryview(bytearray(wire)))
        return
    assert _as_upb_parses(parse(memoryview(bytearray(wire)))) == expected


@pytest.mark.parametrize("where", ["around the body", "around request_body"])
def test_a_message_of_many_small_fields_is_left_to_upb_after_a_few(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Envoy's request has a handful of fields. Walked by hand, a field costs ~1 us of the event
    loop where upb takes ~5 ns: a peer sending 4 MiB of two-byte fields held every stream for
    seconds (upb: 20 ms). Past a few fields the hand parse gives up, and upb parses the message."""
    tiny = b"\x78\x00" * 100_000  # field 15, a varint: unknown to both, two bytes each
    inner = _field(1, _large(SPLIT_SIZE)) + (tiny if where == "around the body" else b"")
    wire = (tiny if where == "around request_body" else b"") + _field(4, inner)
    walked = 0
    fields = protowire.fields

    def counted(data: bytes | memoryview) -> Iterator[protowire.Field]:
        nonlocal walked
        for field in fields(data):
            walked += 1
            yield field

    monkeypatch.setattr(protowire, "fields", counted)
    result = parse(memoryview(wire))
    assert isinstance(result, ep.ProcessingRequest)
    assert result == ep.ProcessingRequest.FromString(wire)
    assert walked <= 100
