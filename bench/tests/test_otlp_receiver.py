"""The traced row's OTLP receiver: a process of its own that counts what the SDK exports to it."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from bench.launch import start_otlp_receiver


def test_the_receiver_counts_every_span_exported_to_it(tmp_path: Path) -> None:
    receiver = start_otlp_receiver(tmp_path)
    try:
        assert receiver.process.alive()
        provider = TracerProvider()
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True))
        )
        tracer = provider.get_tracer("test")
        for i in range(7):
            with tracer.start_as_current_span(f"span {i}", attributes={"i": i}):
                pass
        provider.shutdown()
    finally:
        count = receiver.stop()
    assert count == 7
    assert not receiver.process.alive()
    assert "received 7 spans in 7 exports" in receiver.process.log()
