"""The ext_proc messages of an upload passing through: answers held until the provider is known,
then one answer per chunk, the chunk rewritten for the provider.

An audio upload's route has Envoy send its body chunk by chunk (``STREAMED``) without waiting
for the answer to its headers (``send_body_without_waiting_for_header_response``,
control_plane/xds/envoy_config.py ``streamed_body_route``). Envoy must get, in order, one answer
to the headers and then one answer per chunk; until an answer comes it keeps the chunk (and,
past its buffer limit, stops reading the client). The provider is named by the form's
``model`` field, so:

1. chunks are read (ext_proc/audio_upload.py) and their answers held until ``model`` has
   passed (usually in the first chunk) or the body has ended;
2. then the headers are answered (the route, the provider's path, credentials and content
   type, no content-length: the body's length changes), and every chunk held: with the
   provider's body written so far on the last one and nothing on those before it -- or, for a
   fallback chain, each unchanged (the chain's attempts write their own bodies);
3. from then on each chunk is answered as it comes, with what the writer made of it.

An answer that never comes is Envoy's message timeout, so a refusal (a bad form, a refused
model, limits) is an immediate response at whatever point it is learnt: Envoy then answers
the client and drops the rest of the upload.
"""

from __future__ import annotations

from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from ext_proc import envoy_messages as msg
from ext_proc.audio_upload import UploadStream
from ext_proc.errors import GatewayError
from ext_proc.form_stream import FormWriter, boundary_of
from ext_proc.received import Body

_UNCHANGED = msg.request_chunk(None)
_CLEARED = msg.request_chunk(b"")


class UploadIntake:
    """One upload's chunks and the answers Envoy is owed for them."""

    __slots__ = ("_held", "_max_bytes", "_rewrites", "boundary", "ended", "length", "routed", "stream")

    def __init__(self, content_type: str, lookahead: int, max_bytes: int, length: str | None = None) -> None:
        self.stream = UploadStream(content_type, lookahead)
        self.boundary = boundary_of(content_type)
        self._max_bytes = max_bytes
        # The body's size as its Content-Length announces it (None: not announced).
        self.length = int(length) if length is not None and length.isdigit() else None
        if self.length is not None and self.length > max_bytes:
            raise GatewayError(
                413,
                "request_too_large",
                f"The upload is larger than this gateway accepts ({max_bytes} bytes).",
            )
        self._held = 0  # chunks read whose answers are owed
        self._rewrites = False  # the body is rewritten here (False: a chain's attempts do it)
        self.routed = False
        self.ended = False  # its last chunk has been read

    def feed(self, body: Body) -> bool:
        """Reads a chunk before the provider is known; True when it now is (the model has passed,
        or the body has ended). Raises GatewayError (the client's 4xx)."""
        self._held += 1
        self._read(body)
        return self.stream.model_ready or body.end_of_stream

    def route(self, headers: ep.ProcessingResponse, writer: FormWriter | None) -> list[ep.ProcessingResponse]:
        """The answers owed once the provider is known: ``headers`` (the deferred answer to the
        request headers), then one per chunk held. ``writer``: the provider's body, written as
        the form passes; None to send the body on as it came."""
        self.routed = True
        self._rewrites = writer is not None
        self.stream.start(writer)
        held, self._held = self._held, 0
        if not self._rewrites:
            return [headers, *([_UNCHANGED] * held)]
        return [headers, *([_CLEARED] * (held - 1)), msg.request_chunk(self.stream.take())]

    def next(self, body: Body) -> ep.ProcessingResponse:
        """A chunk after the provider is known, answered at once."""
        self._read(body)
        if not self._rewrites:
            return _UNCHANGED
        return msg.request_chunk(self.stream.take())

    def _read(self, body: Body) -> None:
        stream = self.stream
        stream.feed(bytes(body.body))  # a large chunk's view (ext_proc/received.py) copied: parts keep slices
        self._check_size()
        if body.end_of_stream:
            stream.finish()
            self.ended = True

    def _check_size(self) -> None:
        if self.stream.received > self._max_bytes:
            raise GatewayError(
                413,
                "request_too_large",
                f"The upload is larger than this gateway accepts for this model ({self._max_bytes} bytes).",
            )

    @property
    def measured_ms(self) -> int | None:
        """The file's duration as measured (ext_proc/audio_duration.py), once the body has ended."""
        upload = self.stream.file
        return upload.meter.milliseconds if upload is not None else None

    @property
    def file_bytes(self) -> int:
        return self.stream.file.size if self.stream.file is not None else 0
