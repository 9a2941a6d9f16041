"""An audio upload as ext_proc sees it pass: its small fields kept, its file measured, its body
rewritten for the provider chunk by chunk.

The multipart form of ``/v1/audio/transcriptions`` and ``/translations`` reaches ext_proc in
pieces (``RequestBody.STREAMED``). :class:`UploadStream` reads each piece once
(ext_proc/form_stream.py) and

- keeps every part but the file in :attr:`UploadStream.fields` (``model``, ``language``,
  ``response_format``...; a name ending in ``[]`` collects a list), each at most
  :data:`MAX_FIELD_BYTES`, at most :data:`MAX_PARTS` parts: the request as the endpoint's checks
  and the response's translator read it;
- measures the file as it passes (ext_proc/audio_duration.py) and counts its bytes;
- once the provider is known (:meth:`UploadStream.start`), hands every part to the provider's
  form writer, whose output (:meth:`UploadStream.take`) replaces the chunk upstream.

Where the ``model`` field comes decides what waits. The provider, and so the writer, is known
only once ``model`` has passed: until then the parts already read are kept, to be written when
it is. Every SDK sends the form's text fields before its file (the OpenAI Python and Node SDKs
do, as ``curl -F`` does in the order given), so this is a few hundred bytes. A form that puts
``model`` after the file keeps the file meanwhile, up to ``lookahead`` bytes
(``INFERY_AUDIO_MODEL_LOOKAHEAD_BYTES``); past that the request is refused with a 400 naming
``model``, rather than holding a whole file in ext_proc's memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ext_proc.audio_duration import DurationMeter
from ext_proc.errors import GatewayError
from ext_proc.form_stream import FormError, FormReader, FormSink, FormWriter, PartHead, boundary_of

FILE_FIELD = "file"
MODEL_FIELD = "model"
MAX_FIELD_BYTES = 64 * 1024  # a prompt is a few hundred tokens; a data-URL speaker sample, tens of KB
MAX_PARTS = 64
DEFAULT_LOOKAHEAD_BYTES = 4 * 1024 * 1024


def form_error(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, "invalid_request", message, param=param)


@dataclass(slots=True)
class UploadedFile:
    filename: str
    content_type: str
    size: int = 0
    meter: DurationMeter = field(default_factory=DurationMeter)


class _Keep:
    """The parts read while no writer exists yet, replayed into it when it does."""

    __slots__ = ("events", "size")

    def __init__(self) -> None:
        self.events: list[tuple[int, Any]] = []
        self.size = 0

    def part(self, head: PartHead) -> None:
        self.events.append((0, head))
        self.size += len(head.raw)

    def data(self, chunk: bytes) -> None:
        self.events.append((1, chunk))
        self.size += len(chunk)

    def part_end(self) -> None:
        self.events.append((2, None))

    def end(self) -> None:
        self.events.append((3, None))

    def replay(self, sink: FormSink) -> None:
        for kind, value in self.events:
            if kind == 0:
                sink.part(value)
            elif kind == 1:
                sink.data(value)
            elif kind == 2:
                sink.part_end()
            else:
                sink.end()
        self.events.clear()


class UploadStream:
    """One upload's reader; see the module docstring. Raises GatewayError (400) for a form it
    refuses, whenever it learns why."""

    __slots__ = (
        "_in_file",
        "_keep",
        "_lookahead",
        "_name",
        "_parts",
        "_reader",
        "_value",
        "_writer",
        "fields",
        "file",
        "model_ready",
        "received",
    )

    def __init__(self, content_type: str, lookahead: int = DEFAULT_LOOKAHEAD_BYTES) -> None:
        try:
            self._reader = FormReader(boundary_of(content_type), self)
        except FormError as err:
            raise form_error(str(err)) from None
        self._lookahead = lookahead
        self._keep: _Keep | None = _Keep()
        self._writer: FormWriter | None = None
        self._name = ""  # the current part's name
        self._in_file = False  # the current part is the file
        self._value = bytearray()
        self._parts = 0
        self.fields: dict[str, Any] = {}
        self.file: UploadedFile | None = None
        self.model_ready = False  # the model field has passed
        self.received = 0  # body bytes read

    # -- fed by the exchange ------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        try:
            self._reader.feed(chunk)
        except FormError as err:
            raise form_error(str(err)) from None
        if self._keep is not None and not self.model_ready and self._keep.size > self._lookahead:
            raise form_error(
                f"The 'model' field must come before the file, or within the form's first "
                f"{self._lookahead} bytes.",
                "model",
            )

    def finish(self) -> None:
        """The body ended: the form must be complete, with its file and model."""
        try:
            self._reader.close()
        except FormError as err:
            raise form_error(str(err)) from None
        if self.file is None:
            raise GatewayError(
                400, "missing_required_parameter", "Missing required parameter: 'file'.", param="file"
            )
        self.file.meter.finish()

    def start(self, writer: FormWriter | None) -> None:
        """The provider is known: ``writer`` gets every part from now on (the parts already read
        first). None: the body goes upstream as the client sent it (a fallback chain's attempts
        write it for each target)."""
        keep, self._keep = self._keep, None
        self._writer = writer
        if writer is not None and keep is not None:
            keep.replay(writer)

    @property
    def started(self) -> bool:
        return self._keep is None

    def take(self) -> bytes:
        """What the writer has written since the last call."""
        return self._writer.take() if self._writer is not None else b""

    # -- FormSink ---------------------------------------------------------------------------

    def part(self, head: PartHead) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise form_error(f"The form has more than {MAX_PARTS} parts.")
        self._name = head.name
        self._value.clear()
        self._in_file = head.name == FILE_FIELD and head.filename is not None
        if self._in_file:
            if self.file is not None:
                raise form_error("The form has more than one file.", FILE_FIELD)
            self.file = UploadedFile(head.filename or "", head.content_type)
        self._sink().part(head)

    def data(self, chunk: bytes) -> None:
        if self._in_file:
            assert self.file is not None
            self.file.size += len(chunk)
            self.file.meter.feed(chunk)
        else:
            self._value += chunk
            if len(self._value) > MAX_FIELD_BYTES:
                raise form_error(
                    f"The form field '{self._name}' is larger than {MAX_FIELD_BYTES} bytes.", self._name
                )
        self._sink().data(chunk)

    def part_end(self) -> None:
        if not self._in_file:
            value = self._value.decode("utf-8", "replace")
            if self._name.endswith("[]"):
                self.fields.setdefault(self._name[:-2], []).append(value)
            else:
                self.fields[self._name] = value
            if self._name == MODEL_FIELD:
                self.model_ready = True
        self._in_file = False
        self._sink().part_end()

    def end(self) -> None:
        self._sink().end()

    def _sink(self) -> FormSink:
        return self._writer or self._keep or _NOWHERE


class _Nowhere:
    """The sink of a body that goes upstream unchanged."""

    def part(self, head: PartHead) -> None:
        return None

    def data(self, chunk: bytes) -> None:
        return None

    def part_end(self) -> None:
        return None

    def end(self) -> None:
        return None


_NOWHERE = _Nowhere()
