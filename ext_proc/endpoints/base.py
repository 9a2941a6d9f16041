"""What an inbound API (an *endpoint*) needs from the gateway, declared in one place.

The exchange reads the endpoint's spec instead of branching on paths: which paths and
methods reach it, how its request body travels through ext_proc, whether and how its
answer streams, the checks its parameters get before any translation, how its tokens
are estimated (the tpm reservation, and the charge when a provider's usage is missing
or cannot be believed) and how its usage is priced. What depends on the provider is
not here: the translators (ext_proc/translators/) turn the request into each wire
format and read each provider's usage, one per endpoint and wire format, found by
:attr:`Endpoint.name`.

Usage is read by the endpoint's translators into ``translators.base.Usage``; the spec
says which of it is priced (:attr:`Endpoint.meters`). A new unit of usage (characters of
speech, seconds of audio) is a field of ``Usage`` and a meter in ext_proc/metering.py.

How an answer looks is the endpoint's too: the body of an error (:meth:`Endpoint.error_body`:
OpenAI's envelope, or Anthropic's shape on Anthropic's paths) and how a stream ends
(:meth:`Endpoint.stream_tail`: where ``credits_used`` goes, and whether ``data: [DONE]``
follows). The exchange writes what it adds to an answer through these, never in one API's
shape of its own.

An endpoint answered from the request's headers alone (:class:`HeadersOnly`: the model list, the
kept responses, the files API) says what to do in :meth:`Endpoint.on_headers`, after
the exchange has authenticated the caller: answer now (:class:`Answer`), or let the request go
on to where Envoy routes it (an ext_proc reply to its headers: the files service). An endpoint
whose requests may name files the gateway stores (``file_id``) says where they are and how one
is written inline (:meth:`Endpoint.file_refs`, :meth:`Endpoint.inline_file`); ext_proc/file_refs.py
fetches them.

A spec is stateless: one instance serves every request.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from ext_proc.errors import GatewayError, envelope
from ext_proc.metering import Meter
from ext_proc.translators import sse
from ext_proc.translators.base import StreamTranslator, Usage

if TYPE_CHECKING:
    from ext_proc.config import ApiKey, GatewayConfig
    from ext_proc.exchange import Services


class RequestBody(StrEnum):
    """How the request body travels through ext_proc: the exchange, and Envoy's processing mode
    for the endpoint's route (control_plane/xds/envoy_config.py), read this."""

    # Buffered by Envoy and parsed here as one JSON object: the model is inside it, and the
    # translator rewrites it whole (chat, embeddings, images, responses, messages...).
    JSON = "json"
    # Never sent to ext_proc: the headers decide (authentication, limits), and Envoy streams the
    # body to the service that stores it (file uploads), so its size costs ext_proc nothing.
    HEADERS_ONLY = "headers_only"
    # Sent to ext_proc chunk by chunk, never whole (multipart audio: the model is a form field
    # near the start, rewritten as it passes; the file after it is never held in memory).
    STREAMED = "streamed"


# (stream, include_usage) of a request whose answer is never streamed
NOT_STREAMED = (False, False)
_STREAMED = (True, False)
_STREAMED_WITH_USAGE = (True, True)


def openai_streaming(body: Mapping[str, Any]) -> tuple[bool, bool]:
    """(stream, include_usage) as OpenAI's chat and legacy completions read them:
    ``stream: true``, and ``stream_options.include_usage: true`` for the usage chunk."""
    if body.get("stream") is not True:
        return NOT_STREAMED
    options = body.get("stream_options")
    asked = isinstance(options, dict) and options.get("include_usage") is True
    return _STREAMED_WITH_USAGE if asked else _STREAMED


@dataclass(frozen=True, slots=True)
class LastEvent:
    """What a stream's last event, written by the gateway, is made of (:meth:`Endpoint.stream_last`)."""

    response_id: str  # the stream's id so far ("" when the translator learnt none)
    request_id: str  # the gateway's id of the request, for an id when there is none
    created: int
    slug: str  # the model that served
    usage: Usage | None  # the usage to report, when the client asked for the usage chunk


@dataclass(frozen=True, slots=True)
class HeadersRequest:
    """A request of an endpoint answered from its headers alone (:meth:`Endpoint.on_headers`)."""

    method: str
    target: str  # the path and query string, as the client sent them
    path: str  # without the query string
    key: ApiKey  # the caller, authenticated by the exchange
    config: GatewayConfig
    request_id: str  # the gateway's id of the request
    services: Services  # the process's services (the response store...)


@dataclass(frozen=True, slots=True)
class Answer:
    """The gateway's own answer to a request, from its headers: nothing goes upstream."""

    status: int
    body: bytes  # JSON


# What :meth:`Endpoint.on_headers` gives: the answer, or the reply that lets the request go on
# to where Envoy routes it (the files service), ext_proc seeing none of it again.
HeadersReply: TypeAlias = Answer | ep.ProcessingResponse


@dataclass(frozen=True, slots=True)
class FileRef:
    """A part of a request that names a file stored by the gateway (:meth:`Endpoint.file_refs`)."""

    at: str  # where, as an error's ``param`` names it: "messages[0].content[1].file.file_id"
    part: dict[str, Any]  # the part itself, which :meth:`Endpoint.inline_file` rewrites
    file_id: str

    @classmethod
    def named(cls, at: str, part: dict[str, Any], file_id: Any) -> FileRef:
        """The reference ``part`` makes at ``at``; 400 when its id is not a non-empty string."""
        if not isinstance(file_id, str) or not file_id:
            raise GatewayError(400, "invalid_request", "file_id must be a non-empty string.", at)
        return cls(at, part, file_id)


class Endpoint(ABC):
    """One inbound API. A module of this package defines one subclass and its ``ENDPOINT``."""

    __slots__ = ()

    # The key of its translators (``Translator.endpoint``) and its name in messages.
    name: ClassVar[str]
    # The paths that reach it. One ending in "/" also serves every path under it
    # (``/v1/files/`` for ``/v1/files/{id}`` and ``/v1/files/{id}/content``).
    paths: ClassVar[tuple[str, ...]]
    methods: ClassVar[frozenset[str]] = frozenset({"POST"})
    request_body: ClassVar[RequestBody] = RequestBody.JSON
    # Whether an answer may be an SSE stream (:meth:`streaming` says whether this one is).
    streams: ClassVar[bool] = False
    # OpenTelemetry's ``gen_ai.operation.name`` of its requests (ext_proc/metrics.py).
    operation: ClassVar[str]
    # The parts of its usage that are priced: ``metering.credits(usage, prices, multiplier, meters)``.
    meters: ClassVar[tuple[Meter, ...]]
    # Its requests may continue a kept conversation (``previous_response_id``) and its answers
    # are kept (``store``): the Responses API (ext_proc/conversations.py).
    conversations: ClassVar[bool] = False
    # Whether a model's fallback chain serves it. An endpoint that asks a provider about a
    # request rather than for an answer (count_tokens) goes to the model's own provider only.
    fallback: ClassVar[bool] = True
    # Provider wire formats for which the gateway answers itself (:meth:`local_answer`), with no
    # provider call: count_tokens estimates for providers that cannot count.
    local_for: ClassVar[frozenset[str]] = frozenset()
    # A successful answer goes to the client as the provider sends it, its body never through
    # ext_proc (speech: audio bytes, streamed as produced). Its charge must then be known from
    # the request alone (:meth:`request_usage`), to go in the answer's headers.
    passes_answer: ClassVar[bool] = False

    @property
    def path(self) -> str:
        """Its main path, as clients and messages name it."""
        return self.paths[0]

    def on_headers(self, request: HeadersRequest) -> HeadersReply | Awaitable[HeadersReply]:
        """What a ``RequestBody.HEADERS_ONLY`` endpoint does with an authenticated request: its
        answer, or the reply that sends it on (an awaitable when that needs I/O). Raises
        GatewayError for a refusal. Not metered: the exchange keeps no key, writes no record."""
        raise TypeError(f"{self.name} reads the request's body")

    def file_refs(self, body: Mapping[str, Any]) -> list[FileRef]:
        """The parts of ``body`` naming a file the gateway stores, in order (ext_proc/file_refs.py
        puts each inline for the provider); none by default. Raises GatewayError (400) for a
        malformed one."""
        return []

    def inline_file(self, part: dict[str, Any], filename: str, mime: str, data_uri: str) -> None:
        """Rewrite ``part`` (one of :meth:`file_refs`) in place to carry the file itself: its
        name, its media type (from its bytes) and its bytes as a ``data:`` URI."""
        raise TypeError(f"{self.name} requests name no stored files")

    def check(self, body: dict[str, Any]) -> None:
        """Refuse what the API itself refuses, the same for every provider and before any
        translation (raises GatewayError 400). Nothing by default."""
        return None

    def streaming(self, body: Mapping[str, Any]) -> tuple[bool, bool]:
        """(the answer is streamed, the client asked for the usage chunk)."""
        return NOT_STREAMED

    def local_answer(self, body: Mapping[str, Any]) -> bytes:
        """The gateway's own answer (a JSON body) for a model whose wire format is in :attr:`local_for`."""
        raise TypeError(f"{self.name} is always answered by a provider")

    @abstractmethod
    def prompt_tokens(self, body: Mapping[str, Any]) -> int:
        """The estimate of the request's input tokens (ext_proc/token_estimate.py); 0 for nothing."""

    def input_tokens(self, body: Mapping[str, Any]) -> int:
        """The input to charge when the provider's count is missing: the estimate, at least 1."""
        return max(1, self.prompt_tokens(body))

    def output_allowance(self, body: Mapping[str, Any]) -> int:
        """The most output tokens the request may produce, for its reservation (0: none)."""
        return 0

    def reservation(self, body: Mapping[str, Any]) -> int:
        """A generous guess of the tokens the request will use: input plus output allowance,
        at least 1. What a token limit (tpm) reserves at admission (ext_proc/limits.py)."""
        return max(1, self.prompt_tokens(body) + self.output_allowance(body))

    def request_usage(self, body: Mapping[str, Any]) -> Usage | None:
        """The usage a request will have, when its request alone says (characters to speak);
        None when the answer tells (the default)."""
        return None

    def upload_usage(self, provider: Usage | None, measured_ms: int | None, file_bytes: int) -> Usage:
        """What an upload (``RequestBody.STREAMED``) is charged, from the provider's usage and what
        the gateway measured of the file; the provider's usage (or nothing) by default."""
        return provider if provider is not None and not provider.rejected else Usage()

    def served_chars(self, doc: Any) -> int:
        """Characters of text an answer (or one stream event) delivers to the client: the output
        charged when the provider's usage is missing. 0 for answers that are not text."""
        return 0

    # -- the answer's shapes ---------------------------------------------------------------

    def error_body(self, status: int, code: str, message: str, param: str | None = None) -> bytes:
        """The body of an error answer on this endpoint: OpenAI's envelope unless it says otherwise."""
        return envelope(status, code, message, param)

    def restyle_error(self, status: int, body: bytes) -> bytes:
        """An error body the gateway wrote in OpenAI's envelope (Envoy's local replies, a chain
        attempt's refusal), in this endpoint's shape. Unchanged for OpenAI's own endpoints."""
        return body

    def stream_event(self, data: bytes) -> bytes:
        """One SSE event of this endpoint's streams, from its JSON data: OpenAI's ``data:`` line."""
        return sse.encode(data)

    def stream_error(
        self, status: int, code: str, message: str, stream: StreamTranslator | None = None
    ) -> bytes:
        """The JSON data of an error event ending a stream (OpenAI's SDK raises the envelope).
        ``stream``: the stream's translator, for an API whose events say where they are in the
        stream (the Responses API's ``sequence_number``)."""
        return envelope(status, code, message)

    def stream_last(self, last: LastEvent) -> bytes:
        """The JSON of a stream's last event when its translator held none (it completed without
        one). Only streaming endpoints are asked."""
        raise TypeError(f"{self.name} answers are never streamed")

    def stream_tail(self, last: bytes, credits: str) -> bytes:
        """The end of a stream: its last event (``last``, a JSON object) carrying ``credits_used``
        (``credits``: the exact decimal digits), then OpenAI's ``data: [DONE]``."""
        return sse.encode(with_credits(last, credits)) + b"data: [DONE]\n\n"


class HeadersOnly(Endpoint):
    """An endpoint answered from the request's headers alone (``RequestBody.HEADERS_ONLY``): no body
    reaches ext_proc, no provider serves it, nothing is priced; :meth:`on_headers` says what to do."""

    __slots__ = ()

    methods: ClassVar[frozenset[str]] = frozenset({"GET"})
    request_body: ClassVar[RequestBody] = RequestBody.HEADERS_ONLY
    operation: ClassVar[str] = "other"
    meters: ClassVar[tuple[Meter, ...]] = ()
    fallback: ClassVar[bool] = False

    def prompt_tokens(self, body: Mapping[str, Any]) -> int:
        return 0

    @abstractmethod
    def on_headers(self, request: HeadersRequest) -> HeadersReply | Awaitable[HeadersReply]: ...


def with_credits(event: bytes, credits: str) -> bytes:
    """``event`` (a JSON object) with ``credits_used``, a JSON number written from the exact decimal."""
    return event[:-1] + b',"credits_used":' + credits.encode() + b"}"


def event_type(data: bytes) -> str:
    """The ``type`` of a JSON event (Anthropic names each SSE event after it); "" when it has none."""
    try:
        found = orjson.loads(data).get("type")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    return found if isinstance(found, str) else ""
