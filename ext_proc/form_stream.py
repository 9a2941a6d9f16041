"""A multipart/form-data body read as it passes, chunk by chunk, never held whole.

Audio uploads (``/v1/audio/transcriptions``, ``/translations``) reach ext_proc in pieces
(``RequestBody.STREAMED``). :class:`FormReader` drives python-multipart's streaming parser over
them and tells a :class:`FormSink` what it sees, in order: each part's head (its name, file name,
content type and header lines as received), the part's bytes as they come, the part's end, the
form's end. The sinks do the work: ext_proc/audio_upload.py keeps the small fields and measures
the file; a translator's form writer (translators/base.py ``FormWriter``) writes the provider's
request body from the same events, so the file flows through in the pieces it arrived in.

A body that is not a well-formed form (no boundary, a broken delimiter, a header over
:data:`MAX_PART_HEADER_BYTES`, no closing delimiter before the body ends) raises
:class:`FormError`, the client's 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

MAX_PART_HEADER_BYTES = 8192  # one part's header lines (Content-Disposition, Content-Type)
MAX_PART_HEADERS = 8


class FormError(ValueError):
    """The body is not a well-formed multipart form."""


@dataclass(frozen=True, slots=True)
class PartHead:
    name: str  # Content-Disposition's name
    filename: str | None  # its filename, for a file part
    content_type: str  # Content-Type, lower case, without parameters ("" when absent)
    raw: bytes  # the header lines as received, "Name: value\r\n" each, for writing the part again


class FormSink(Protocol):
    def part(self, head: PartHead) -> None: ...

    def data(self, chunk: bytes) -> None: ...

    def part_end(self) -> None: ...

    def end(self) -> None: ...


class FormWriter(FormSink, Protocol):
    """A sink that writes another body from the form (a provider's request)."""

    def take(self) -> bytes:
        """What it has written since the last call."""
        ...


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` content type; FormError for any other type."""
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary", b"")
    if kind != b"multipart/form-data" or not boundary:
        raise FormError("The request body must be multipart/form-data with a boundary.")
    if len(boundary) > 70:  # RFC 2046
        raise FormError("The multipart boundary is longer than 70 characters.")
    return boundary


class FormReader:
    """Feeds a form's chunks to a parser and reports its parts to ``sink``."""

    __slots__ = ("_field", "_head", "_parser", "_sink", "_value", "ended")

    def __init__(self, boundary: bytes, sink: FormSink) -> None:
        self._sink = sink
        self._head = bytearray()  # the current part's header lines
        self._field = bytearray()  # the current header's name and value, being read
        self._value = bytearray()
        self.ended = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": sink.part_end,
                "on_end": self._end,
            },
            max_header_count=MAX_PART_HEADERS,
            max_header_size=MAX_PART_HEADER_BYTES,
        )

    def feed(self, chunk: bytes) -> None:
        if not chunk or self.ended:
            return  # an epilogue after the closing delimiter is ignored, as every server does
        try:
            self._parser.write(chunk)
        except MultipartParseError as err:
            raise FormError(f"The multipart body is malformed: {err}.") from None

    def close(self) -> None:
        """The body ended: it must have ended its form."""
        if not self.ended:
            raise FormError("The multipart body ended before its closing boundary.")

    # -- the parser's callbacks -------------------------------------------------------------

    def _part_begin(self) -> None:
        self._head.clear()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._head += bytes(self._field) + b": " + bytes(self._value) + b"\r\n"
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        disposition = content_type = b""
        for line in bytes(self._head).split(b"\r\n"):
            name, _, value = line.partition(b":")
            lowered = name.strip().lower()
            if lowered == b"content-disposition":
                disposition = value.strip()
            elif lowered == b"content-type":
                content_type = value.strip()
        kind, params = parse_options_header(disposition)
        if kind != b"form-data" or b"name" not in params:
            raise MultipartParseError("a part without Content-Disposition: form-data; name=...")
        filename = params.get(b"filename")
        self._sink.part(
            PartHead(
                params[b"name"].decode("utf-8", "replace"),
                filename.decode("utf-8", "replace") if filename is not None else None,
                parse_options_header(content_type)[0].decode("latin-1").lower() if content_type else "",
                bytes(self._head),
            )
        )

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self._sink.data(data[start:end])

    def _end(self) -> None:
        self.ended = True
        self._sink.end()


def part_header(boundary: bytes, head: PartHead) -> bytes:
    """A part's delimiter and header lines, as a form writer sends them again."""
    return b"--" + boundary + b"\r\n" + head.raw + b"\r\n"


def part_trailer() -> bytes:
    """What ends a part's bytes: the CRLF before the next delimiter."""
    return b"\r\n"


def closing(boundary: bytes) -> bytes:
    """The form's closing delimiter."""
    return b"--" + boundary + b"--\r\n"
