"""Whether a process exports traces, read from OpenTelemetry's own environment variables.

Tracing is configured the standard way (the OTel SDK's variables), not with INFERY_* ones:
an operator's collector setup (endpoint, headers, sampler, service name) carries over from
every other service it runs. ext_proc decides from here whether to make a tracer at all
(off: no tracer object, no span work), and the control plane whether Envoy's listener traces
and where Envoy sends its spans; both read the same variables, so they agree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler


def traces_endpoint(environ: Mapping[str, str] = os.environ) -> str | None:
    """The OTLP endpoint traces go to, or None when tracing is off.

    Off unless ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set;
    off too with ``OTEL_SDK_DISABLED=true`` or an ``OTEL_TRACES_EXPORTER`` without ``otlp``
    (``none``), as the SDK reads them.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters and "otlp" not in {e.strip() for e in exporters.split(",")}:
        return None
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    return endpoint or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or None


def tracer_provider(
    service_name: str, environ: Mapping[str, str] = os.environ, sampler: Sampler | None = None
) -> TracerProvider | None:
    """The process's tracer provider, exporting by OTLP/gRPC; None (and the SDK not even imported)
    when tracing is off.

    The SDK reads the rest of OpenTelemetry's variables itself: the exporter's endpoint, headers,
    TLS and timeout (``OTEL_EXPORTER_OTLP_*``), the sampler (``OTEL_TRACES_SAMPLER``, parent-based
    always-on by default), the batch's size and delay (``OTEL_BSP_*``), resource attributes.
    ``OTEL_SERVICE_NAME`` wins over ``service_name``. ``sampler``, when given, replaces the one the
    variables name (ext_proc's: ext_proc/tracing.py ``configure``).
    """
    if traces_endpoint(environ) is None:
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        sampler=sampler,
        resource=Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or service_name}),
    )
    # Exported by the processor's own thread: the event loop only queues a finished span.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def sampled_share(environ: Mapping[str, str] = os.environ) -> float:
    """The share of traces sampled, 0 to 1, as ``OTEL_TRACES_SAMPLER``/``_ARG`` ask: their ratio for
    ``traceidratio``/``parentbased_traceidratio``, none for ``always_off``/``parentbased_always_off``,
    else every trace. Envoy's listener samples the same share (control_plane/xds/envoy_config.py),
    so the spans of a request are all kept or all dropped: ext_proc's parent-based sampler follows
    the decision in Envoy's ``traceparent``."""
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler in ("always_off", "parentbased_always_off"):
        return 0.0
    if sampler not in ("traceidratio", "parentbased_traceidratio"):
        return 1.0
    try:
        ratio = float(environ.get("OTEL_TRACES_SAMPLER_ARG", "1") or "1")
    except ValueError:
        return 1.0  # the SDK too falls back to its default on a bad argument
    if ratio != ratio:  # NaN: float() reads "nan", and no comparison would clamp it
        return 1.0
    return min(max(ratio, 0.0), 1.0)


# The SDK's BatchSpanProcessor defaults (OTEL_BSP_MAX_EXPORT_BATCH_SIZE, OTEL_BSP_SCHEDULE_DELAY).
DEFAULT_BATCH_SPANS = 512
DEFAULT_BATCH_DELAY_MS = 5000


def span_batching(environ: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """(spans, milliseconds): a batch of spans is exported when it holds this many, or this long
    after the last export, from ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` and ``OTEL_BSP_SCHEDULE_DELAY``
    as the SDK reads them (anything but a positive integer: the SDK's default). ext_proc's
    and the control plane's SDK read them themselves; Envoy's tracer is given the same through its
    bootstrap's runtime (infery/stack.py), whose own defaults (5 spans) would make an export of
    every other request."""

    def positive(name: str, default: int) -> int:
        try:
            value = int(environ.get(name, "").strip())
        except ValueError:
            return default
        return value if value > 0 else default

    return (
        positive("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_BATCH_SPANS),
        positive("OTEL_BSP_SCHEDULE_DELAY", DEFAULT_BATCH_DELAY_MS),
    )


def grpc_host_port(endpoint: str, environ: Mapping[str, str] = os.environ) -> tuple[str, int, bool]:
    """(host, port, TLS) of an OTLP/gRPC endpoint, as the SDK's gRPC exporter reads it.

    ``http://collector:4317``: plaintext; ``https://...``: TLS; without a scheme, TLS unless
    ``OTEL_EXPORTER_OTLP_INSECURE=true``. The port defaults to OTLP/gRPC's 4317.
    """
    scheme, _, rest = endpoint.rpartition("://")
    parts = urlsplit("//" + rest)
    if not parts.hostname:
        raise ValueError(f"the OTLP endpoint has no host: {endpoint!r}")
    if scheme:
        tls = scheme == "https"
    else:
        tls = environ.get("OTEL_EXPORTER_OTLP_INSECURE", "").strip().lower() != "true"
    return parts.hostname, parts.port or 4317, tls
