"""The ext_proc gRPC service: one bidirectional stream per HTTP request (or per attempt).

Served by :mod:`ext_proc.h2_grpc` with the protobuf (upb) classes from
xds-protos doing the (de)serialization — the measured fast path. The same
service answers Envoy's listener filter (an :class:`Exchange`) and its
upstream filter on fallback-chain clusters (an :class:`AttemptExchange`);
the first message tells which, and one loop dispatches either
(:class:`~ext_proc.processor.Processor`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from ext_proc import envoy_messages as msg
from ext_proc.attempt import AttemptExchange, is_attempt
from ext_proc.config import GatewayConfig
from ext_proc.deadline import MessageDeadline, Suspended, start
from ext_proc.exchange import Exchange, Services
from ext_proc.h2_grpc import CALL_METADATA, Method
from ext_proc.processor import Processor
from ext_proc.received import Received, ReceivedBody, parse

log = logging.getLogger("infery.ext_proc")

PROCESS = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
DEFAULT_DEADLINE = MessageDeadline()
# Told of each answer: the phase of the message it answers and when that arrived (perf_counter).
Answered = Callable[[str, float], None]


def _uncounted(phase: str, arrived: float) -> None:
    """No metrics (INFERY_METRICS_PORT=0)."""


def methods(
    current_config: Callable[[], GatewayConfig | None],
    services: Services,
    deadline: MessageDeadline = DEFAULT_DEADLINE,
    answered: Answered | None = None,
) -> dict[str, Method]:
    """``answered`` counts and times every answer (ext_proc/metrics.py), called here where the
    phase is known anyway rather than through a wrapper around the stream."""
    # The request body phase may fetch media or wait on Redis, a response body phase may wait
    # for an emulated n's other choices: they ask Envoy for more time when they run long
    # (ext_proc/deadline.py). Other phases answer at once.
    extend_after = deadline.extend_after_s
    more_time = msg.more_time(deadline.max_message_timeout_s)

    tracer = services.tracer
    counted = answered or _uncounted
    clock = time.perf_counter

    def processor_for(first: ep.ProcessingRequest) -> Processor:
        if is_attempt(first):
            return AttemptExchange(current_config(), services.media, first, tracer)
        if tracer is not None:  # Envoy's trace context, in the stream's gRPC metadata
            return Exchange(current_config(), services, CALL_METADATA.get())
        return Exchange(current_config(), services)

    async def process(
        requests: AsyncIterator[ep.ProcessingRequest | Received],
    ) -> AsyncGenerator[msg.Reply, None]:
        req = await anext(requests, None)
        if req is None:
            return
        processor = processor_for(req.message if isinstance(req, Received) else req)
        try:
            while req is not None:
                received: ReceivedBody | None = None
                if isinstance(req, Received):  # a large request body: its bytes a view of its message
                    req, received = req.message, req.request_body
                kind = req.WhichOneof("request")
                arrived = clock()
                phase = kind or ""
                try:
                    if kind == "response_body":  # the most frequent: each chunk of a stream
                        # One send when it does not wait; an emulated n's end waits for its other
                        # choices, and asks for more time as the request body phase does.
                        chunk_answer = start(processor.on_response_body(req.response_body))
                        if isinstance(chunk_answer, Suspended):
                            async for response in chunk_answer.answers(extend_after, more_time):
                                counted(phase, arrived)
                                yield response
                        else:
                            counted(phase, arrived)
                            yield chunk_answer
                    elif kind == "request_headers":
                        answer = processor.on_request_headers(req.request_headers)
                        if answer is not None and not isinstance(answer, ep.ProcessingResponse):
                            answer = await answer  # an endpoint answered from the headers with I/O
                        if answer is not None:  # an upload's headers are answered with its chunks
                            counted(phase, arrived)
                            yield answer
                    elif kind == "request_body":
                        # The message (or the view of it) is dropped here, the phase keeps what it
                        # needs of it: a prompt of megabytes is not held by the loop while it is answered.
                        work = processor.on_request_body(req.request_body if received is None else received)
                        req = received = None
                        started = start(work)
                        del work
                        if isinstance(started, Suspended):
                            async for response in started.answers(extend_after, more_time):
                                for each in response if isinstance(response, list) else (response,):
                                    counted(phase, arrived)
                                    yield each
                        elif isinstance(started, list):  # an upload's chunk: the answers now owed
                            for each in started:
                                counted(phase, arrived)
                                yield each
                        else:
                            counted(phase, arrived)
                            yield started
                        del started  # the reply (the body sent upstream) once it is written
                    elif kind == "response_headers":
                        answer = await processor.on_response_headers(req.response_headers)
                        counted(phase, arrived)
                        yield answer
                    elif kind:
                        counted(phase, arrived)
                        yield msg.continue_other(kind)
                except Exception:
                    log.exception("request %s: internal error in %s", processor.request_id, kind)
                    counted(phase, arrived)
                    yield processor.internal_error()
                    return
                req = await anext(requests, None)
        finally:
            processor.abort()

    # A large request body stays a view of its message (ext_proc/received.py).
    return {PROCESS: Method(process, ep.ProcessingRequest.FromString, msg.serialize, deserialize_large=parse)}
