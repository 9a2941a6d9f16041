"""The one interface of an ext_proc stream's handler, whichever Envoy filter opened the stream.

Envoy's listener filter opens one stream per request (:class:`ext_proc.exchange.Exchange`);
its upstream filter on a fallback chain's cluster opens one per attempt
(:class:`ext_proc.attempt.AttemptExchange`). Both answer the same phases, as Envoy AI
Gateway's ``Processor`` does (``ProcessRequestHeaders``, ``ProcessRequestBody``,
``ProcessResponseHeaders``, ``ProcessResponseBody``), so ext_proc/server.py dispatches both
with one loop. Two hooks complete it: :meth:`Processor.internal_error` when a phase raises,
and :meth:`Processor.abort` when the stream ends, however it ends (a request the listener
has not settled yet is settled there: ext_proc/lifecycle.py).

The headers phase is a plain call (it reads the message and the configuration), but for
an endpoint answered from the headers alone with I/O (the Responses API's kept responses,
read from the control plane) it returns a coroutine, which the loop awaits; the others
may wait (limits, idempotency, media) and are coroutines.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from ext_proc.envoy_messages import Reply
from ext_proc.received import Body


class Processor(Protocol):
    @property
    def request_id(self) -> str:
        """The gateway's id of the request, for logs ("" until known)."""
        ...

    def on_request_headers(
        self, headers: ep.HttpHeaders
    ) -> ep.ProcessingResponse | Awaitable[ep.ProcessingResponse] | None:
        """The answer; None when it is owed later (an upload's, once its model has passed); a
        coroutine to await for an endpoint answered from the headers with I/O (the kept responses)."""
        ...

    async def on_request_body(self, body: Body) -> Reply | list[ep.ProcessingResponse]:
        """The answer (a large body sent upstream kept aside: ``envoy_messages.Spliced``); for a
        chunk of an upload, the answers now owed (none, or the headers' and every chunk's held
        until its model passed: ext_proc/upload_intake.py). A large ``body``'s bytes are a view of
        the received message (ext_proc/received.py): dropped once read, the message goes."""
        ...

    async def on_response_headers(self, headers: ep.HttpHeaders) -> ep.ProcessingResponse: ...

    async def on_response_body(self, body: ep.HttpBody) -> ep.ProcessingResponse: ...

    def internal_error(self) -> ep.ProcessingResponse:
        """A phase raised (a bug): settle what must be, and the reply that says so."""
        ...

    def abort(self) -> None:
        """The stream ended (Envoy closed it, the client left, or after an internal error)."""
        ...
