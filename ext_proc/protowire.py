"""Protobuf's wire format, read by hand where upb would copy a large field: just enough to find
a field's bytes in a serialized message (ext_proc/received.py) or to splice a large field into
one (``envoy_messages.Spliced``). Everything else is parsed and serialized by upb.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

VARINT, I64, LEN, I32 = 0, 1, 2, 5
MAX_VARINT = 10  # bytes: a 64-bit value


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


def varint(data: bytes | memoryview, i: int) -> tuple[int, int]:
    """The varint at ``i`` and where it ends. Raises ValueError if it is cut short or too long."""
    value = shift = 0
    end = min(len(data), i + MAX_VARINT)
    while i < end:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
    raise ValueError("a varint cut short or longer than 10 bytes")


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def fields(data: bytes | memoryview) -> Iterator[Field]:
    """The fields of the serialized message ``data``, in order. Raises ValueError where it is
    not well formed (field number 0, a field past the message's end, a group, an unknown wire type)."""
    i, size = 0, len(data)
    while i < size:
        start = i
        key, i = varint(data, i)
        number, wire = key >> 3, key & 7
        length_at = content = i
        if wire == VARINT:
            i = varint(data, i)[1]
        elif wire == I64:
            i += 8
        elif wire == I32:
            i += 4
        elif wire == LEN:
            length, content = varint(data, i)
            i = content + length
        else:
            raise ValueError(f"wire type {wire}")
        if number == 0 or i > size:
            raise ValueError("field number 0, or a field past the message's end")
        yield Field(number, wire, start, length_at, content, i)
