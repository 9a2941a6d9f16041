"""A real OTLP/gRPC trace receiver for the tests and the bench, on a free loopback port.

The collector's own ``TraceService/Export`` (the classes opentelemetry-proto ships), served by
grpcio: the gateway's processes export to it exactly as to an OpenTelemetry Collector, with
the SDK's OTLP exporter (ext_proc) and Envoy's OpenTelemetry tracer. Each received span is kept
flattened (:class:`ReceivedSpan`) for the tests to look at.

``python -m simulators.otlp_collector`` runs one as a process of its own that only counts what
it receives (the bench's receiver for its traced row: a collector's CPU is then measured apart
from the bench's, like any process of the run). It prints ``ready otlp http://127.0.0.1:PORT``
once listening and, when stopped (SIGTERM), ``received N spans in M exports``.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from infery.stack import free_port

KINDS = {
    trace_pb2.Span.SPAN_KIND_INTERNAL: "internal",
    trace_pb2.Span.SPAN_KIND_SERVER: "server",
    trace_pb2.Span.SPAN_KIND_CLIENT: "client",
    trace_pb2.Span.SPAN_KIND_PRODUCER: "producer",
    trace_pb2.Span.SPAN_KIND_CONSUMER: "consumer",
}


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # the resource's service.name
    trace_id: str  # hex, as in a traceparent
    span_id: str
    parent_span_id: str  # "" for a root
    name: str
    kind: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status_code: int  # 0 unset, 1 ok, 2 error
    start_ns: int
    end_ns: int

    @classmethod
    def of(cls, service: str, span: trace_pb2.Span) -> ReceivedSpan:
        return cls(
            service,
            span.trace_id.hex(),
            span.span_id.hex(),
            span.parent_span_id.hex(),
            span.name,
            KINDS.get(span.kind, "unspecified"),
            _attributes(span.attributes),
            [(e.name, _attributes(e.attributes)) for e in span.events],
            int(span.status.code),
            span.start_time_unix_nano,
            span.end_time_unix_nano,
        )


@dataclass
class OtlpCollector(trace_service_pb2_grpc.TraceServiceServicer):
    """``with OtlpCollector() as collector:`` ... ``collector.endpoint`` for OTEL_EXPORTER_OTLP_ENDPOINT."""

    port: int = field(default_factory=free_port)
    spans: list[ReceivedSpan] = field(default_factory=list)
    exports: int = 0
    keep: bool = True  # False: count the spans only (``received``), keep none
    received: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        if not self.keep:
            count = sum(len(scope.spans) for spans in request.resource_spans for scope in spans.scope_spans)
            with self._lock:
                self.received += count
                self.exports += 1
            return trace_service_pb2.ExportTraceServiceResponse()
        received = []
        for resource_spans in request.resource_spans:
            service = str(_attributes(resource_spans.resource.attributes).get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                received += [ReceivedSpan.of(service, span) for span in scope_spans.spans]
        with self._lock:
            self.spans += received
            self.received += len(received)
            self.exports += 1
        return trace_service_pb2.ExportTraceServiceResponse()

    def start(self) -> OtlpCollector:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, server)
        server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def __enter__(self) -> OtlpCollector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def find(self, predicate: Callable[[ReceivedSpan], bool]) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if predicate(s)]

    def all(self) -> Iterator[ReceivedSpan]:
        with self._lock:
            yield from list(self.spans)

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], trace_id: str, timeout: float = 15.0
    ) -> list[ReceivedSpan]:
        """The spans of ``trace_id`` once ``predicate`` holds for them (else AssertionError)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.trace(trace_id)
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                names = [(s.service, s.name) for s in spans]
                raise AssertionError(f"trace {trace_id}: not complete within {timeout}s; got {names}")
            time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description="An OTLP/gRPC trace receiver that counts spans.")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    args = parser.parse_args()
    # Taken with sigwait, not a handler: a handler that sets an Event can deadlock against the
    # main thread's own wait on it, and a signal landing on one of gRPC's threads would wake no
    # one. Blocked before gRPC starts its threads, which inherit the mask.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    collector = OtlpCollector(port=args.port or free_port(), keep=False).start()
    print(f"ready otlp {collector.endpoint}", flush=True)
    signal.sigwait(stop_signals)
    collector.stop()
    print(f"received {collector.received} spans in {collector.exports} exports", flush=True)


if __name__ == "__main__":
    main()
