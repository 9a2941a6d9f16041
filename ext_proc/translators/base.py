"""The one interface every translator implements: one inbound API to one provider wire format.

A translator serves one pair, as Envoy AI Gateway's ``internal/translator/<from>_<to>``
files do: the endpoint the client called (``ext_proc/endpoints/``, by its name) and the
wire format the provider speaks (``openai``, ``anthropic``, ``gemini``). It is pure:
the client's request in, the provider's request out; the provider's response (or stream
bytes) in, the client's response (or SSE bytes) out. No gRPC, no Envoy, no I/O — so each
one is tested on recorded fixtures alone. Which pairs exist is ``translators/__init__.py``'s
registry; a pair that does not is ``400 unsupported_endpoint``.

Media a provider needs as bytes (an ``image_url`` given as an https URL, for
a provider that cannot fetch it) is fetched by ext_proc *before* translation:
the translator lists the URLs it needs (:meth:`Translator.media_urls`) and
receives their bytes in :attr:`Target.media`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from ..form_stream import FormWriter
from .sse import DEFAULT_MAX_EVENT_BYTES


@dataclass(frozen=True, slots=True)
class Media:
    mime_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Target:
    """Where one attempt goes."""

    kind: str  # provider kind: openai | anthropic | google | xai | openai_compatible
    base_path: str  # path part of the provider's base URL, no trailing slash
    api_key: str  # provider credential
    upstream_model: str  # the provider's own model name
    media: Mapping[str, Media] = field(default_factory=dict)


@dataclass(slots=True)
class UpstreamRequest:
    path: str  # full request path, query string included
    headers: dict[str, str]  # headers to set (credentials, content-type, versions)
    body: bytes


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0  # all prompt tokens, cached ones included
    cached_input_tokens: int = 0
    output_tokens: int = 0  # all completion tokens, reasoning included
    reasoning_tokens: int = 0
    images: int = 0
    # The gateway's estimate (ext_proc/token_estimate.py), not the provider's count.
    estimated: bool = False
    # Why the provider's usage was not charged as given (translators/usage.py); empty when it was.
    rejected: str = ""
    characters: int = 0  # characters of text spoken (/v1/audio/speech)
    audio_ms: int = 0  # milliseconds of audio heard (/v1/audio/transcriptions, /translations)


@dataclass(frozen=True, slots=True)
class ResponseContext:
    """What a translator needs to shape an OpenAI response."""

    slug: str  # the model slug that served
    upstream_model: str
    created: int  # unix seconds
    include_usage: bool = False  # streams: pass the usage chunk to the client
    # The client's OpenAI request, for what shapes the answer (encoding_format,
    # parallel_tool_calls, ...). Translators read it and never change it.
    request: Mapping[str, Any] = field(default_factory=dict)
    # Streams: the largest provider event read (translators/sse.py); past it the stream is cut.
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    # Audio uploads: the file's duration as the gateway measured it (ext_proc/audio_duration.py),
    # 0 when it could not.
    audio_ms: int = 0


@dataclass(slots=True)
class TranslatedResponse:
    status: int
    body: bytes  # OpenAI-shaped JSON (an error envelope when status >= 400)
    usage: Usage | None = None
    error_code: str | None = None  # the envelope's error.code when status >= 400
    # The body's content type when it is not JSON (a transcript as text/plain, subtitles, an
    # SSE stream made from a buffered answer); None: application/json, or the provider's own.
    content_type: str | None = None


class StreamTranslator(Protocol):
    """Provider SSE bytes in, OpenAI ``chat.completion.chunk`` SSE bytes out.

    ``feed`` returns complete OpenAI events only; it never emits
    ``data: [DONE]``. The stream's last chunk is not emitted but *held*
    (:attr:`held`, its JSON) for the gateway to add ``credits_used`` to before
    ``[DONE]``: the final ``finish_reason`` chunk without
    ``ResponseContext.include_usage``, the usage chunk (``choices: []`` with
    ``usage``) with it, or a provider error (OpenAI's envelope, which also sets
    :attr:`error_code`). Holding a new one emits the one held before.
    :attr:`usage` is always filled from the provider. ``model`` in every chunk
    is ``ResponseContext.slug``.
    """

    usage: Usage | None
    done: bool  # the provider signalled the end of the stream
    response_id: str  # the id of the chunks, for a final chunk the gateway writes
    error_code: str | None
    held: bytes | None  # the last chunk's JSON, for the gateway to complete

    @property
    def overflowed(self) -> bool:
        """An event grew past ``ResponseContext.max_event_bytes``: the rest of the stream is ignored."""
        ...

    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes:
        """Flush at the end of the upstream body; returns any last events."""
        ...


class Translator(ABC):
    """One (endpoint, wire format) pair. Stateless: one instance serves every request."""

    __slots__ = ()

    endpoint: ClassVar[str]  # the name of the endpoint it serves (``ext_proc/endpoints/``)
    wire_format: ClassVar[str]  # the provider API it speaks (``translators.WIRE_FORMATS``)
    # The provider kinds of that wire format it serves; None: all of them. Kinds of one wire
    # format may differ in which APIs they have (OpenAI serves the Responses API; xAI and
    # OpenAI-compatible servers are reached through chat completions for it).
    kinds: ClassVar[frozenset[str] | None] = None

    def media_urls(self, body: Mapping[str, Any]) -> list[str]:
        """https URLs in the request this provider needs fetched as bytes (none unless it says so)."""
        return []

    @abstractmethod
    def request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        """Build the provider request; raises GatewayError (400) for what cannot be honoured."""

    @abstractmethod
    def response(self, status: int, body: bytes, ctx: ResponseContext) -> TranslatedResponse:
        """Translate a buffered provider response, success or error."""

    def stream(self, ctx: ResponseContext) -> StreamTranslator:
        """The translator of a streamed answer. Only endpoints whose answers stream
        (``Endpoint.streams``) are ever asked; the others' pairs have none."""
        raise TypeError(f"{type(self).__name__}: {self.endpoint} answers are never streamed")


@dataclass(slots=True)
class FormUpstream:
    """Where a form endpoint's attempt goes, and the writer of its body.

    The body is written as the client's form passes (ext_proc/form_stream.py): ``writer``
    gets each part's head and bytes, and its ``take()`` is what goes upstream in place of
    the chunk just read. The body's length is unknown when the headers go: no content-length.
    """

    path: str
    headers: dict[str, str]
    writer: FormWriter


class FormTranslator(Translator):
    """A pair whose endpoint takes a multipart form read as a stream (``RequestBody.STREAMED``):
    its request is a writer fed with the form's parts, never a whole body."""

    __slots__ = ()

    @abstractmethod
    def form_request(self, target: Target, boundary: bytes) -> FormUpstream:
        """The provider request's path and headers, and the writer of its body. ``boundary``
        is the client's form's. Raises GatewayError (400) for what cannot be honoured; the
        writer raises it too, for what it learns later in the form."""

    def request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        raise TypeError(f"{type(self).__name__}: {self.endpoint} requests are forms, written as they pass")
