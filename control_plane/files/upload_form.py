"""Reading a ``multipart/form-data`` upload as it arrives, the file part straight into storage.

python-multipart's push parser finds the parts in each chunk the client sends; the
``file`` part's bytes go to the storage writer as they are found, the small text
fields (``purpose``, ``expires_after[...]``) are kept. Nothing grows with the file's
size but the byte count, and a file over the limit stops the upload at the first byte
past it (:class:`TooLarge`, the writer then discards what it had).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from control_plane.files.storage import Writer

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FILE_FIELD = "file"
MAX_FIELD_BYTES = 1024  # a text field (purpose, expires_after[seconds]) is short
MAX_FIELDS = 16


class FormError(ValueError):
    """The body is not the form the API takes; ``param`` names the field at fault, if one is."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class TooLarge(Exception):
    """The file part is over the size limit."""


def boundary_of(content_type: str) -> bytes:
    """The multipart boundary of a ``Content-Type`` header; :class:`FormError` if it has none."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary", b"")
    if kind != b"multipart/form-data" or not boundary:
        raise FormError("Uploads are multipart/form-data with a 'file' part and a 'purpose' field.")
    return boundary


@dataclass(slots=True)
class UploadForm:
    """What a complete form carried: its text fields, and the file part's name and size."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None  # None: no file part
    bytes: int = 0


@dataclass(slots=True)
class _Part:
    name: str = ""
    filename: str | None = None
    value: bytearray = field(default_factory=bytearray)


class _Events:
    """The parser's callbacks, queued: the parser is synchronous, storage writes are not."""

    def __init__(self) -> None:
        self.queue: list[tuple[str, bytes]] = []
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.ended = False

    def callbacks(self) -> MultipartCallbacks:
        callbacks: dict[str, Callable[..., None]] = {
            "on_part_begin": lambda: self.queue.append(("begin", b"")),
            "on_header_field": lambda data, start, end: self.header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self.header_value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": lambda: self.queue.append(("headers", b"")),
            "on_part_data": lambda data, start, end: self.queue.append(("data", bytes(data[start:end]))),
            "on_part_end": lambda: self.queue.append(("end", b"")),
            "on_end": self._end,
        }
        return cast("MultipartCallbacks", callbacks)

    def _header_end(self) -> None:
        self.queue.append(("header", bytes(self.header_field).lower() + b"\0" + bytes(self.header_value)))
        self.header_field.clear()
        self.header_value.clear()

    def _end(self) -> None:
        self.ended = True


class FormReader:
    """Feeds chunks to the parser and applies its events; one per upload.

    The caller opens the storage writer first and reads the whole form inside its scope,
    validating the fields before leaving it: a form it refuses (no file, an unknown
    ``purpose`` sent after the file) raises there, and the writer discards the bytes.
    """

    def __init__(self, boundary: bytes, writer: Writer, max_file_bytes: int) -> None:
        self._events = _Events()
        self._parser = MultipartParser(
            boundary, self._events.callbacks(), max_header_count=8, max_header_size=4096
        )
        self._writer = writer
        self._max = max_file_bytes
        self._part: _Part | None = None
        self._headers: dict[str, str] = {}
        self.form = UploadForm()

    async def feed(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise FormError(f"The multipart body is malformed: {exc}.") from None
        queue, self._events.queue = self._events.queue, []
        for kind, data in queue:
            await self._apply(kind, data)

    def finish(self) -> UploadForm:
        """The form, once the body has ended; :class:`FormError` if it ended mid-way."""
        if not self._events.ended:
            raise FormError("The multipart body ended before its closing boundary.")
        return self.form

    async def _apply(self, kind: str, data: bytes) -> None:
        if kind == "begin":
            self._part = _Part()
            self._headers = {}
        elif kind == "header":
            name, _, value = data.partition(b"\0")
            self._headers[name.decode("latin-1")] = value.decode("utf-8", "replace")
        elif kind == "headers":
            self._start_part()
        elif kind == "data":
            await self._data(data)
        elif kind == "end":
            self._end_part()

    def _start_part(self) -> None:
        assert self._part is not None
        disposition, options = parse_options_header(self._headers.get("content-disposition", ""))
        if disposition != b"form-data" or b"name" not in options:
            raise FormError("Each part of the form needs a Content-Disposition with a name.")
        self._part.name = options[b"name"].decode("utf-8", "replace")
        if self._part.name == FILE_FIELD:
            if self.form.filename is not None:
                raise FormError("The form has more than one 'file' part.", param=FILE_FIELD)
            filename = options.get(b"filename")
            self.form.filename = filename.decode("utf-8", "replace") if filename else "upload"
            self._part.filename = self.form.filename
        elif len(self.form.fields) >= MAX_FIELDS:
            raise FormError("The form has too many fields.")

    async def _data(self, data: bytes) -> None:
        part = self._part
        assert part is not None
        if part.filename is None:
            if len(part.value) + len(data) > MAX_FIELD_BYTES:
                raise FormError(f"The field '{part.name}' is too long.", param=part.name)
            part.value.extend(data)
            return
        self.form.bytes += len(data)
        if self.form.bytes > self._max:
            raise TooLarge
        await self._writer.write(data)

    def _end_part(self) -> None:
        part = self._part
        if part is not None and part.filename is None:
            self.form.fields[part.name] = part.value.decode("utf-8", "replace")
        self._part = None
