"""Incremental Server-Sent Events parsing, shared by every stream translator.

Provider streams arrive in arbitrary body chunks: an event may be split across
chunks, or one chunk may carry many events. :class:`SSEBuffer` keeps the
partial tail and yields only complete events.

It follows the WHATWG event-stream rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
a line ends with CRLF, LF or a lone CR (also when a CRLF is split across two
chunks); one leading byte-order mark is dropped; the stream is UTF-8 and bytes that
are not become U+FFFD, never an exception; a line without a colon is a field with
an empty value; an event without a ``data`` line is not dispatched. One deliberate
leniency: a last event the provider did not end with a blank line is still read at
the end of the stream (:meth:`SSEBuffer.flush`), since it may carry the usage.

An event is bounded (``max_event_bytes``, ``INFERY_MAX_SSE_EVENT_BYTES``): a
provider that streams one event without end must not hold unbounded memory. Past
the bound the buffer drops its tail, sets :attr:`SSEBuffer.overflowed` and ignores
the rest of the stream; the exchange then ends the client's stream with an error.
The tail is scanned once: each chunk is searched from where the last search ended,
so a long event costs linear, not quadratic, time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

DEFAULT_MAX_EVENT_BYTES = 4 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: bytes  # valid UTF-8
    raw: bytes  # the event as received (line ends normalized to LF), blank line included


class SSEBuffer:
    __slots__ = ("_cr", "_head", "_scanned", "_tail", "max_event_bytes", "overflowed")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._tail = bytearray()
        self._scanned = 0  # bytes of the tail already searched for an event's end
        self._head: bytes | None = b""  # the stream's first bytes until the BOM is decided; then None
        self._cr = False  # the last chunk ended with CR: a LF starting the next one ends no line
        self.max_event_bytes = max_event_bytes
        self.overflowed = False

    def feed(self, chunk: bytes) -> Iterator[SSEEvent]:
        if self.overflowed:
            return
        if self._head is not None:
            chunk = self._head + chunk
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                self._head = chunk
                return
            self._head = None
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        if self._cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        if b"\r" in chunk:
            self._cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        elif chunk:
            self._cr = False
        tail = self._tail
        if tail:
            tail += chunk
            buf: bytes | bytearray = tail
            search = max(0, self._scanned - 1)  # the blank line may straddle the chunks
        else:
            buf = chunk
            search = 0
        start = 0
        while True:
            end = buf.find(b"\n\n", search)
            if end < 0:
                break
            raw = bytes(buf[start : end + 2])
            start = search = end + 2
            parsed = parse_event(raw)
            if parsed is not None:
                yield parsed
        if buf is tail:
            del tail[:start]
        else:
            tail[:] = buf[start:]
        self._scanned = len(tail)
        if len(tail) > self.max_event_bytes:
            self.overflowed = True
            tail.clear()
            self._scanned = 0

    @property
    def idle(self) -> bool:
        """Between events: a chunk of whole LF-terminated events would pass through unchanged."""
        return not self._tail and self._head is None and not self._cr

    def flush(self) -> Iterator[SSEEvent]:
        """The last event of a stream that ended without a blank line."""
        tail = bytes(self._tail)
        self._tail.clear()
        self._scanned = 0
        if tail.strip() and not self.overflowed:
            parsed = parse_event(tail + b"\n\n")
            if parsed is not None:
                yield parsed


def parse_event(raw: bytes) -> SSEEvent | None:
    """One event's lines (LF-separated) as an :class:`SSEEvent`; None when it has no data."""
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
            event = value.decode("utf-8", "replace")
    if not data:
        return None
    joined = b"\n".join(data)
    if not joined.isascii():
        valid = joined.decode("utf-8", "replace").encode()
        if valid != joined:  # not UTF-8: U+FFFD in the data, and in what is passed on
            joined = valid
            raw = (b"event: " + event.encode() + b"\n" if event is not None else b"") + _data_lines(joined)
    return SSEEvent(event, joined, raw)


def _data_lines(data: bytes) -> bytes:
    return b"".join(b"data: " + line + b"\n" for line in data.split(b"\n")) + b"\n"


def encode(data: bytes) -> bytes:
    """One OpenAI-style SSE event (``data: ...`` and a blank line)."""
    return b"data: " + data + b"\n\n"
