"""Request traces: an OpenTelemetry span per request and one per provider attempt, when on.

Off by default, and then free: without ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or with
``OTEL_SDK_DISABLED=true``; infery_proto/otel.py) :func:`configure` returns None, so
``Services.tracer`` is None, every exchange's ``trace`` stays None and the hot path pays
one ``is None`` test at each phase that would record something. The SDK is not imported.

On, the spans of one request (names and attributes: README, "Traces"):

- the **request span** (SERVER), opened with the listener's headers phase and ended by the
  request's one exit (ext_proc/settlement.py): its parent is the span Envoy opened for
  this ext_proc stream (its tracer puts a ``traceparent`` in the stream's gRPC metadata),
  else the client's own ``traceparent`` (but see "who decides" below); each lifecycle move
  (ext_proc/lifecycle.py) is an event on it; at the exit it gets the outcome, with the same
  figures as the usage record (status, error code, tokens, credits, the model and provider
  that served);
- one **attempt span** (CLIENT) per provider attempt, a child of the request span, named
  and described by OpenTelemetry's GenAI conventions (``gen_ai.*``). The provider gets a
  new ``traceparent`` naming it. A model without fallbacks has one attempt, opened and
  ended here by the listener (with the tokens charged); a fallback chain's attempts are
  opened by Envoy's upstream filter's streams (ext_proc/attempt.py: :class:`AttemptTrace`,
  maybe in another process), which learn their parent from the listener through Envoy's
  dynamic metadata and their provider's status from the answer's headers.

Who decides whether a request is traced: the operator's share (``OTEL_TRACES_SAMPLER``/``_ARG``),
never the client. A traced request costs ext_proc ~2x the CPU (bench/README.md) and fills the
operator's trace store, so a client's word (Envoy's ``x-client-trace-id``, the sampled flag of a
W3C ``traceparent``) must not buy one. The sampler is parent-based, always (:func:`configure`):
a span follows its parent's flag. Envoy's span is the parent when Envoy traces, and Envoy decided
at the operator's share (its ``client_sampling`` is 0: control_plane/xds/envoy_config.py), so
Envoy's and ext_proc's spans are kept or dropped together. When no span of Envoy's is there (Envoy
not tracing), the client's ``traceparent`` is still the parent, so the trace joins the client's,
but with ext_proc's own roll at the share in place of the client's flag (:meth:`Tracer.client_parent`).
The root of a trace nobody began is sampled on its (ext_proc's random) trace id at the share: a
plain ratio sampler would sample on the trace id of a client's ``traceparent``, which the client
chooses.

Never in a span: a prompt, a completion, a key, a header value of the client's. Attribute
values are the gateway's own names and numbers (ids, configured slugs, statuses, counts).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from infery_proto.otel import sampled_share, tracer_provider, traces_endpoint
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from ext_proc.config import Model
    from ext_proc.exchange import Exchange
    from ext_proc.h2_grpc.server import Metadata
    from ext_proc.lifecycle import State

SERVICE_NAME = "infery-ext-proc"  # OTEL_SERVICE_NAME wins
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_PROPAGATOR = TraceContextTextMapPropagator()

# gen_ai.provider.name: OpenTelemetry's well-known value for each provider kind; an
# OpenAI-compatible server has none, and is named as configured.
_PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "google": "gcp.gemini", "xai": "x_ai"}
# An attempt whose stream ended before any answer header (a reset, a timeout).
NO_RESPONSE = "no_response"


def provider_name(kind: str, configured: str) -> str:
    """``gen_ai.provider.name`` of a provider of ``kind`` configured as ``configured``."""
    return _PROVIDER_NAMES.get(kind, configured)


def attempt_name(operation: str, model: Model) -> str:
    """GenAI's span name: ``{gen_ai.operation.name} {gen_ai.request.model}``."""
    return f"{operation} {model.upstream_model}"


def attempt_attributes(operation: str, model: Model, request_id: str) -> dict[str, Any]:
    """What an attempt span says before the provider answers: what was asked of whom."""
    provider = model.provider
    return {
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": model.upstream_model,
        "gen_ai.provider.name": provider_name(provider.kind, provider.name),
        "server.address": provider.host,
        "infery.model": model.slug,
        "infery.provider": provider.name,
        "infery.request_id": request_id,
    }


def parent_context(*carriers: Mapping[str, str]) -> Context | None:
    """The context of the first carrier with a valid ``traceparent`` (None: a new trace)."""
    for carrier in carriers:
        if TRACEPARENT in carrier:
            context = _PROPAGATOR.extract(carrier)
            if trace.get_current_span(context).get_span_context().is_valid:
                return context
    return None


def grpc_carrier(metadata: Metadata) -> dict[str, str]:
    """The W3C trace headers of an ext_proc stream's gRPC metadata (Envoy's span, when it traces):
    bytes from ext_proc's own server, text from grpc.aio's."""
    carrier = {}
    for name, value in metadata:
        key = name.decode("latin-1") if isinstance(name, bytes) else name
        if key in (TRACEPARENT, TRACESTATE):
            carrier[key] = value.decode("latin-1") if isinstance(value, bytes) else value
    return carrier


def traceparent(span: trace.Span) -> str:
    """The W3C ``traceparent`` naming ``span``."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    return carrier.get(TRACEPARENT, "")


@dataclass(slots=True)
class Tracer:
    """The process's tracer (one per ext_proc process), present only when tracing is on.
    ``share``: the share of traces sampled, the operator's (Envoy samples the same)."""

    tracer: trace.Tracer
    provider: TracerProvider | None = None
    share: float = 1.0

    def client_parent(self, carrier: Mapping[str, str]) -> Context | None:
        """The client's trace to join (None: none valid), sampled by ext_proc's roll at the share
        whatever the client's flag says (the module's docstring: who decides)."""
        context = parent_context(carrier)
        if context is None:
            return None
        client = trace.get_current_span(context).get_span_context()
        flags = TraceFlags.SAMPLED if random.random() < self.share else TraceFlags.DEFAULT
        ours = SpanContext(client.trace_id, client.span_id, True, TraceFlags(flags), client.trace_state)
        return trace.set_span_in_context(NonRecordingSpan(ours))

    def request(self, method: str, path: str, known: bool, parent: Context | None) -> RequestTrace:
        """The request span of a request the listener just received."""
        name = f"{method} {path}" if known else method  # a client's path is no span name
        attributes: dict[str, Any] = {"http.request.method": method}
        if known:
            attributes["url.path"] = path
        span = self.tracer.start_span(name, parent, SpanKind.SERVER, attributes)
        return RequestTrace(self, span)

    def attempt(self, operation: str, model: Model, request_id: str, parent: Context | None) -> AttemptTrace:
        """An attempt span: one provider asked for one answer."""
        span = self.tracer.start_span(
            attempt_name(operation, model),
            parent,
            SpanKind.CLIENT,
            attempt_attributes(operation, model, request_id),
        )
        return AttemptTrace(span)

    def shutdown(self) -> None:
        """Export what is still queued (at the process's end)."""
        if self.provider is not None:
            self.provider.shutdown()


class AttemptTrace:
    """One provider attempt's span: its status when the answer's headers come, then its end."""

    __slots__ = ("error_type", "span", "status")

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.status = 0
        self.error_type = ""

    @property
    def traceparent(self) -> str:
        """What the provider gets: this attempt as its parent."""
        return traceparent(self.span)

    def answered(self, status: int, error_type: str = "") -> None:
        self.status = status
        self.span.set_attribute("http.response.status_code", status)
        if status >= 400 or error_type:
            self.failed(error_type or str(status))

    def failed(self, error_type: str) -> None:
        self.error_type = error_type
        self.span.set_attribute("error.type", error_type)
        self.span.set_status(Status(StatusCode.ERROR))

    def end(self) -> None:
        if not self.status and not self.error_type:  # reset or timed out before any answer header
            self.failed(NO_RESPONSE)
        self.span.end()


class RequestTrace:
    """The request span of one exchange, and its single attempt's when it has no fallbacks."""

    __slots__ = ("_tracer", "attempt", "span")

    def __init__(self, tracer: Tracer, span: trace.Span) -> None:
        self._tracer = tracer
        self.span = span
        self.attempt: AttemptTrace | None = None

    @property
    def traceparent(self) -> str:
        """The request span's, for a chain's attempts (their parent)."""
        return traceparent(self.span)

    def moved(self, state: State) -> None:
        self.span.add_event(state.value)

    def authenticated(self, workspace_id: str) -> None:
        self.span.set_attribute("infery.workspace_id", workspace_id)

    def routed(self, operation: str, model: Model, request_id: str) -> str:
        """The single attempt to ``model``'s provider begins; the ``traceparent`` it is sent with."""
        context = trace.set_span_in_context(self.span)
        self.attempt = self._tracer.attempt(operation, model, request_id, context)
        return self.attempt.traceparent

    def answered(self, status: int, error_type: str) -> None:
        """The provider's answer headers (or the gateway's own reply instead of one)."""
        attempt = self.attempt
        if attempt is not None:
            attempt.answered(status, error_type)

    def fell_back(self, from_model: str, to_model: str) -> None:
        self.span.add_event("fallback", {"infery.fallback_from": from_model, "infery.model": to_model})

    def end(self, ex: Exchange) -> None:
        """The request's exit: the outcome on the spans, as the usage record has it, then their end."""
        span = self.span
        status, error_code = ex.status, ex.error_code
        attributes: dict[str, Any] = {
            "infery.request_id": ex.request_id,
            "infery.outcome": ex.state.value,
            "http.response.status_code": status,
        }
        endpoint, model = ex.endpoint, ex.model
        if endpoint is not None:
            attributes["gen_ai.operation.name"] = endpoint.operation
        if model is not None:  # a model the gateway chose: never what a client typed in its place
            provider = model.provider
            attributes["gen_ai.request.model"] = ex.model_requested
            attributes["gen_ai.response.model"] = model.slug
            attributes["gen_ai.provider.name"] = provider_name(provider.kind, provider.name)
            attributes["infery.provider"] = provider.name
        usage = ex.usage
        if usage is not None:
            tokens = {
                "gen_ai.usage.input_tokens": usage.input_tokens,
                "gen_ai.usage.output_tokens": usage.output_tokens,
            }
            if usage.cached_input_tokens:
                tokens["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input_tokens
            attributes.update(tokens)
            attributes["infery.credits"] = str(ex.credits)
            attributes["infery.usage_estimated"] = usage.estimated
            if self.attempt is not None:
                self.attempt.span.set_attributes(tokens)
        if ex.fallback_from:
            attributes["infery.fallback_from"] = ex.fallback_from
        if ex.stream:
            attributes["infery.stream"] = True
        if ex.replayed:
            attributes["infery.idempotent_replay"] = True
        error_type = error_code or (str(status) if status >= 400 else "")
        if error_type:
            attributes["error.type"] = error_type
        span.set_attributes(attributes)
        if status >= 500 or ex.error_code == "stream_interrupted":
            span.set_status(Status(StatusCode.ERROR))
        attempt = self.attempt
        if attempt is not None:
            if error_code and not attempt.status:  # no answer from it: the gateway's own reply
                attempt.failed(error_code)
            attempt.end()
        span.end()


def configure(environ: Mapping[str, str] = os.environ) -> Tracer | None:
    """The process's tracer, exporting by OTLP/gRPC (infery_proto/otel.py); None (no tracer at
    all, the SDK not imported) when tracing is off.

    Its sampler is parent-based with a ratio root at the operator's share, whichever sampler
    ``OTEL_TRACES_SAMPLER`` names (its share is read from it): the module's docstring says why."""
    if traces_endpoint(environ) is None:
        return None
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    share = sampled_share(environ)
    provider = tracer_provider(SERVICE_NAME, environ, ParentBased(TraceIdRatioBased(share)))
    if provider is None:
        return None
    return Tracer(provider.get_tracer("infery.ext_proc"), provider, share)
