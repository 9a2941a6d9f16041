"""Protobuf's wire format, read by hand where upb would copy a large field: just enough to find
a field's bytes in a serialized message (ext_proc/received.py) or to splice a large field into
one (``envoy_messages.Spliced``). Everything else is parsed and serialized by upb.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

VARINT, I64, LEN, I32 = 0, 1, 2, 5
MAX_VARINT = 10  # bytes: a 64-bit value
# A key or a length is a 32-bit varint to upb: past 5 bytes, or 2^32, it refuses the message.
# The hand parse must too, for the keys and lengths it removes before upb reads the rest.
MAX_VARINT32 = 5


class Field(NamedTuple):
    """One field of a serialized message: its number and wire type, where its key starts, where
    its length starts (length-delimited fields; else where its value starts), where its content
    starts, where it ends."""

    number: int
    wire: int
    start: int
    length_at: int
    content: int
    end: int


def varint(data: bytes | memoryview, i: int, longest: int = MAX_VARINT) -> tuple[int, int]:
    """The varint at ``i`` and where it ends. Raises ValueError if it is cut short or longer
    than ``longest`` bytes."""
    value = shift = 0
    end = min(len(data), i + longest)
    while i < end:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
    raise ValueError(f"a varint cut short or longer than {longest} bytes")


def varint32(data: bytes | memoryview, i: int) -> tuple[int, int]:
    """A key or a length at ``i`` (:data:`MAX_VARINT32`), and where it ends. Raises ValueError
    where upb would refuse it."""
    value, end = varint(data, i, MAX_VARINT32)
    if value >> 32:
        raise ValueError("a key or a length past 32 bits")
    return value, end


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def fields(data: bytes | memoryview) -> Iterator[Field]:
    """The fields of the serialized message ``data``, in order. Raises ValueError where it is
    not well formed (field number 0, a field past the message's end, a group, an unknown wire type,
    a key or a length upb would not read: :func:`varint32`)."""
    i, size = 0, len(data)
    while i < size:
        start = i
        key, i = varint32(data, i)
        number, wire = key >> 3, key & 7
        length_at = content = i
        if wire == VARINT:
            i = varint(data, i)[1]
        elif wire == I64:
            i += 8
        elif wire == I32:
            i += 4
        elif wire == LEN:
            length, content = varint32(data, i)
            i = content + length
        else:
            raise ValueError(f"wire type {wire}")
        if number == 0 or i > size:
            raise ValueError("field number 0, or a field past the message's end")
        yield Field(number, wire, start, length_at, content, i)
