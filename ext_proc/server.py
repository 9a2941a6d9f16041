"""The ext_proc gRPC service: one bidirectional stream per HTTP request.

Registered as a generic handler so that the protobuf (upb) classes from
xds-protos do the (de)serialization — the measured fast path.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from ext_proc import envoy_messages as msg
from ext_proc.config import GatewayConfig
from ext_proc.errors import envelope
from ext_proc.exchange import Exchange, Recorder

log = logging.getLogger("infery.ext_proc")

SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"


def handler(current_config: Callable[[], GatewayConfig | None], record: Recorder) -> grpc.GenericRpcHandler:
    async def process(
        requests: AsyncIterator[ep.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[ep.ProcessingResponse]:
        exchange = Exchange(current_config(), record)
        try:
            async for req in requests:
                kind = req.WhichOneof("request")
                try:
                    if kind == "request_headers":
                        yield exchange.on_request_headers(req.request_headers)
                    elif kind == "request_body":
                        yield await exchange.on_request_body(req.request_body)
                    elif kind == "response_headers":
                        yield exchange.on_response_headers(req.response_headers)
                    elif kind == "response_body":
                        yield exchange.on_response_body(req.response_body)
                    elif kind:
                        yield msg.continue_other(kind)
                except Exception:
                    log.exception("request %s: internal error in %s", exchange.request_id, kind)
                    exchange.status, exchange.error_code = 500, "internal_error"
                    exchange.abort()
                    yield msg.immediate(
                        500,
                        envelope(500, "internal_error", "The gateway failed to process the request."),
                        (("x-request-id", exchange.request_id),),
                    )
                    return
        finally:
            exchange.abort()

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Process": grpc.stream_stream_rpc_method_handler(
                process,
                request_deserializer=ep.ProcessingRequest.FromString,
                response_serializer=ep.ProcessingResponse.SerializeToString,
            )
        },
    )
