"""Incremental Server-Sent Events framing, shared by every stream translator.

Provider streams arrive in arbitrary body chunks: an event may be split across
chunks, or one chunk may carry many events. :class:`SSEBuffer` keeps the
partial tail and yields only complete events.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: bytes
    raw: bytes  # the event's bytes as received, terminator included


class SSEBuffer:
    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        buf = self._tail + chunk if self._tail else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            raw = buf[start : end + 2]
            start = end + 2
            parsed = parse_event(raw)
            if parsed is not None:
                yield parsed
        self._tail = buf[start:]

    def flush(self) -> Iterator[SSEEvent]:
        """The last event of a stream that ended without a blank line."""
        tail, self._tail = self._tail, b""
        if tail.strip():
            parsed = parse_event(tail + b"\n\n")
            if parsed is not None:
                yield parsed


def parse_event(raw: bytes) -> SSEEvent | None:
    event: str | None = None
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            event = value.decode()
    if not data and event is None:
        return None
    return SSEEvent(event, b"\n".join(data), raw)


def encode(data: bytes) -> bytes:
    """One OpenAI-style SSE event (``data: ...`` and a blank line)."""
    return b"data: " + data + b"\n\n"
