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

A spec is stateless: one instance serves every request.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, ClassVar

from ext_proc.metering import Meter


class RequestBody(StrEnum):
    """How the request body travels through ext_proc. Every served endpoint is JSON today; the
    first endpoint of another kind (files, audio) makes the exchange, and Envoy's processing
    mode for its route, read this."""

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

    @property
    def path(self) -> str:
        """Its main path, as clients and messages name it."""
        return self.paths[0]

    def check(self, body: dict[str, Any]) -> None:
        """Refuse what the API itself refuses, the same for every provider and before any
        translation (raises GatewayError 400). Nothing by default."""
        return None

    def streaming(self, body: Mapping[str, Any]) -> tuple[bool, bool]:
        """(the answer is streamed, the client asked for the usage chunk)."""
        return NOT_STREAMED

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

    def served_chars(self, doc: Any) -> int:
        """Characters of text an answer (or one stream event) delivers to the client: the output
        charged when the provider's usage is missing. 0 for answers that are not text."""
        return 0
