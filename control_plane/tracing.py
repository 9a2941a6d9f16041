"""The admin API's spans, when tracing is on (OpenTelemetry's variables: infery_proto/otel.py).

One SERVER span per admin request, by OpenTelemetry's FastAPI instrumentation, exported to the
same collector as ext_proc's and Envoy's. Scrapes and probes make none: they would bury the
operators' requests. Off, nothing is imported or wrapped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI
from infery_proto.otel import tracer_provider

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

SERVICE_NAME = "infery-control-plane"  # OTEL_SERVICE_NAME wins
UNTRACED = "/metrics,/healthz,/readyz"  # the instrumentation's excluded_urls (regular expressions)


def instrument(app: FastAPI) -> TracerProvider | None:
    """Spans for ``app``'s requests; the provider to shut down at the end (None: tracing off)."""
    provider = tracer_provider(SERVICE_NAME)
    if provider is None:
        return None
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=UNTRACED)
    return provider
