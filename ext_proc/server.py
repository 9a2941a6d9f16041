"""The ext_proc gRPC service: one bidirectional stream per HTTP request (or per attempt).

Served by :mod:`ext_proc.h2_grpc` with the protobuf (upb) classes from
xds-protos doing the (de)serialization — the measured fast path. The same
service answers Envoy's listener filter (an :class:`Exchange`) and its
upstream filter on fallback-chain clusters (an :class:`AttemptExchange`);
the first message tells which.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from infery_proto.wire import REQUEST_ID_HEADER

from ext_proc import envoy_messages as msg
from ext_proc.attempt import AttemptExchange, is_attempt
from ext_proc.config import GatewayConfig
from ext_proc.deadline import MessageDeadline, Suspended, start
from ext_proc.errors import envelope
from ext_proc.exchange import Exchange, Services
from ext_proc.h2_grpc import Method

log = logging.getLogger("infery.ext_proc")

PROCESS = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
DEFAULT_DEADLINE = MessageDeadline()


def _internal_error(request_id: str) -> ep.ProcessingResponse:
    return msg.immediate(
        500,
        envelope(500, "internal_error", "The gateway failed to process the request."),
        ((REQUEST_ID_HEADER, request_id),),
    )


def methods(
    current_config: Callable[[], GatewayConfig | None],
    services: Services,
    deadline: MessageDeadline = DEFAULT_DEADLINE,
) -> dict[str, Method]:
    # The request body phase may fetch media or wait on Redis: it asks Envoy for more
    # time when it runs long (ext_proc/deadline.py). Other phases answer at once.
    extend_after = deadline.extend_after_s
    more_time = msg.more_time(deadline.max_message_timeout_s)

    async def attempt(
        first: ep.ProcessingRequest, requests: AsyncIterator[ep.ProcessingRequest]
    ) -> AsyncIterator[ep.ProcessingResponse]:
        exchange = AttemptExchange(current_config(), services.media)
        # A refused attempt answers every later message with its refusal (Envoy sends none
        # after an immediate response; a client that does gets the refusal, never a key).
        yield exchange.on_request_headers(first)
        async for req in requests:
            kind = req.WhichOneof("request")
            if kind == "request_body":
                started = start(exchange.on_request_body(req.request_body))
                if isinstance(started, Suspended):
                    async for response in started.answers(extend_after, more_time):
                        yield response
                else:
                    yield started
            elif kind:
                yield msg.continue_other(kind)

    async def listener(
        first: ep.ProcessingRequest, requests: AsyncIterator[ep.ProcessingRequest]
    ) -> AsyncIterator[ep.ProcessingResponse]:
        exchange = Exchange(current_config(), services)
        try:
            req: ep.ProcessingRequest | None = first
            while req is not None:
                kind = req.WhichOneof("request")
                try:
                    if kind == "request_headers":
                        yield exchange.on_request_headers(req.request_headers)
                    elif kind == "request_body":
                        started = start(exchange.on_request_body(req.request_body))
                        if isinstance(started, Suspended):
                            async for response in started.answers(extend_after, more_time):
                                yield response
                        else:
                            yield started
                    elif kind == "response_headers":
                        yield await exchange.on_response_headers(req.response_headers)
                    elif kind == "response_body":
                        yield await exchange.on_response_body(req.response_body)
                    elif kind:
                        yield msg.continue_other(kind)
                except Exception:
                    log.exception("request %s: internal error in %s", exchange.request_id, kind)
                    yield exchange.internal_error()
                    return
                req = await anext(requests, None)
        finally:
            exchange.abort()

    async def process(
        requests: AsyncIterator[ep.ProcessingRequest],
    ) -> AsyncGenerator[ep.ProcessingResponse, None]:
        first = await anext(requests, None)
        if first is None:
            return
        phase = attempt if is_attempt(first) else listener
        async for response in phase(first, requests):
            yield response

    return {
        PROCESS: Method(process, ep.ProcessingRequest.FromString, ep.ProcessingResponse.SerializeToString)
    }
