"""ext_proc/tracing.py on Envoy's message sequence, without Envoy: which spans, which parents, what
the provider is told; and that tracing off makes no tracer at all.

Spans go to the SDK's in-memory exporter here; tests/e2e/test_traces.py exports them by OTLP from
a real gateway to a real receiver.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from decimal import Decimal

import orjson
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import struct_pb2, text_format
from infery_proto.v1 import config_pb2, usage_pb2
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ext_proc import config, tracing
from ext_proc.attempt import AttemptExchange
from ext_proc.attempt_grant import Grant, sign
from ext_proc.exchange import Exchange, Services
from ext_proc.idempotency import Idempotency
from ext_proc.limits import Limiter
from ext_proc.media_fetch import MediaPolicy
from ext_proc.shared_state import MemoryState

KEY = "inf_test-key"
GRANT_KEY = b"g" * 32
CLIENT_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ENVOY_PARENT = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"


def _config() -> config.GatewayConfig:
    return config.build(
        [
            config_pb2.Provider(
                name="p",
                kind="openai",
                cluster="provider_p",
                base_path="/v1",
                host="h",
                api_key="sk-provider",
            ),
            config_pb2.Provider(name="a", kind="anthropic", cluster="provider_a", host="ha", api_key="sk-a"),
        ],
        [
            config_pb2.Model(
                slug="m",
                provider="p",
                upstream_model="up",
                prices=config_pb2.Prices(input_per_mtok="1", output_per_mtok="2"),
            ),
            config_pb2.Model(slug="claude", provider="a", upstream_model="claude-up"),
        ],
        [config_pb2.Workspace(id="w", name="w", price_multiplier="1")],
        [
            config_pb2.ApiKey(
                id="k", key_hash=hashlib.sha256(KEY.encode()).hexdigest(), workspace_id="w", member_id="m"
            )
        ],
        [],
        [config_pb2.DataPlaneSecret(name="d", attempt_grant_key=GRANT_KEY)],
    )


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exported: InMemorySpanExporter) -> tracing.Tracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return tracing.Tracer(provider.get_tracer("test"), provider)


def _headers(pairs: dict[str, str], end: bool = False) -> ep.HttpHeaders:
    return ep.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]
        ),
        end_of_stream=end,
    )


def _set(mutation: ep.HeaderMutation) -> dict[str, str]:
    return {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}


def _exchange(
    tracer: tracing.Tracer | None, records: list[usage_pb2.UsageRecord], metadata: tuple = ()
) -> Exchange:
    state = MemoryState(prefix="t")
    services = Services(records.append, Limiter(state), Idempotency(state), tracer=tracer)
    return Exchange(_config(), services, metadata)


def _span(exported: InMemorySpanExporter, kind: SpanKind) -> ReadableSpan:
    (span,) = [s for s in exported.get_finished_spans() if s.kind is kind]
    return span


def _traceparent_of(span: ReadableSpan) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-01"


async def _answered(exchange: Exchange, client: dict[str, str]) -> dict[str, str]:
    """A buffered chat request through the exchange; the headers its provider request was given."""
    exchange.on_request_headers(
        _headers(
            {":path": "/v1/chat/completions", ":method": "POST", "authorization": f"Bearer {KEY}", **client}
        )
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "a prompt that is private"}]}
    reply = await exchange.on_request_body(ep.HttpBody(body=orjson.dumps(body), end_of_stream=True))
    sent = _set(reply.request_body.response.header_mutation)
    await exchange.on_response_headers(_headers({":status": "200", "content-type": "application/json"}))
    answer = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "up",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "a private answer"}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
    await exchange.on_response_body(ep.HttpBody(body=orjson.dumps(answer), end_of_stream=True))
    return sent


async def test_a_request_is_a_server_span_with_its_attempt_inside_and_the_provider_is_told_the_attempt(
    tracer: tracing.Tracer, exported: InMemorySpanExporter
):
    records: list[usage_pb2.UsageRecord] = []
    sent = await _answered(_exchange(tracer, records), {"traceparent": CLIENT_PARENT})
    request, attempt = _span(exported, SpanKind.SERVER), _span(exported, SpanKind.CLIENT)
    (record,) = records
    # The client's traceparent is the request span's parent; the attempt is the request span's child.
    assert request.parent is not None and f"{request.parent.span_id:016x}" == CLIENT_PARENT.split("-")[2]
    assert request.context.trace_id == int(CLIENT_PARENT.split("-")[1], 16)
    assert attempt.parent is not None and attempt.parent.span_id == request.context.span_id
    assert sent["traceparent"] == _traceparent_of(attempt)  # the provider's parent: the attempt
    assert request.name == "POST /v1/chat/completions" and attempt.name == "chat up"
    assert [e.name for e in request.events] == ["received", "admitted", "routed", "responding", "finished"]
    assert dict(attempt.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "up",
        "gen_ai.provider.name": "openai",
        "server.address": "h",
        "infery.model": "m",
        "infery.provider": "p",
        "infery.request_id": record.request_id,
        "http.response.status_code": 200,
        "gen_ai.usage.input_tokens": 7,
        "gen_ai.usage.output_tokens": 3,
    }
    a = request.attributes or {}
    assert a["infery.request_id"] == record.request_id and a["infery.workspace_id"] == "w"
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (7, 3)
    assert Decimal(str(a["infery.credits"])) == Decimal(record.credits)
    assert a["infery.outcome"] == "finished" and "error.type" not in a
    # Ended by the exit: once, before the request's record was written.
    assert request.end_time is not None and attempt.end_time is not None


async def test_envoys_span_for_the_stream_is_the_parent_over_the_clients(
    tracer: tracing.Tracer, exported: InMemorySpanExporter
):
    metadata = (
        (b":path", b"/envoy.service.ext_proc.v3.ExternalProcessor/Process"),
        (b"traceparent", ENVOY_PARENT.encode()),
    )
    await _answered(_exchange(tracer, [], metadata), {"traceparent": CLIENT_PARENT})
    request = _span(exported, SpanKind.SERVER)
    assert request.parent is not None and f"{request.parent.span_id:016x}" == ENVOY_PARENT.split("-")[2]
    # grpc.aio gives text metadata: read the same way.
    assert tracing.grpc_carrier((("traceparent", ENVOY_PARENT),)) == {"traceparent": ENVOY_PARENT}


def _tracer_at(share: float, exported: InMemorySpanExporter) -> tracing.Tracer:
    """A tracer sampling ``share`` of the traces, with the SDK's default (parent-based) sampler."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return tracing.Tracer(provider.get_tracer("test"), provider, share)


async def test_a_clients_sampled_flag_decides_nothing_only_the_operators_share_does(
    exported: InMemorySpanExporter,
):
    """Without Envoy's span (Envoy not tracing) the client's ``traceparent`` is the parent: its
    trace is joined, but whether it is sampled is ext_proc's own roll at the operator's share,
    so a client can neither force a trace (cost: ~3x ext_proc's CPU, the operator's store) nor
    hide one."""
    await _answered(_exchange(_tracer_at(0.0, exported), []), {"traceparent": CLIENT_PARENT})
    assert not exported.get_finished_spans()  # flag 01, share 0: not traced
    unsampled = CLIENT_PARENT[:-2] + "00"
    await _answered(_exchange(_tracer_at(1.0, exported), []), {"traceparent": unsampled})
    request = _span(exported, SpanKind.SERVER)  # flag 00, share 1: traced, in the client's trace
    assert request.context.trace_id == int(CLIENT_PARENT.split("-")[1], 16)
    assert request.parent is not None and f"{request.parent.span_id:016x}" == CLIENT_PARENT.split("-")[2]


async def test_envoys_decision_is_the_one_that_counts(exported: InMemorySpanExporter):
    """Envoy sampled at the operator's share (never on a client's word: its ``client_sampling`` is
    0): its span's flag decides ext_proc's, whatever the client's says and whatever the share."""
    envoy_unsampled = ENVOY_PARENT[:-2] + "00"
    not_traced = ((b"traceparent", envoy_unsampled.encode()),)
    await _answered(_exchange(_tracer_at(1.0, exported), [], not_traced), {"traceparent": CLIENT_PARENT})
    assert not exported.get_finished_spans()
    traced = ((b"traceparent", ENVOY_PARENT.encode()),)
    await _answered(_exchange(_tracer_at(0.0, exported), [], traced), {"traceparent": CLIENT_PARENT})
    request = _span(exported, SpanKind.SERVER)
    assert request.parent is not None and f"{request.parent.span_id:016x}" == ENVOY_PARENT.split("-")[2]


def test_the_sampler_follows_the_parent_at_the_operators_share_whatever_sampler_is_named() -> None:
    """A ratio sampler that is not parent-based would decide on the trace id, which a client
    chooses (an id of zeros passes any ratio): ext_proc's sampler is always parent-based, its
    root a ratio at the share Envoy samples (infery_proto/otel.py ``sampled_share``)."""
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}
    for sampler, arg, share in (
        ("traceidratio", "0.25", 0.25),
        ("parentbased_traceidratio", "0.5", 0.5),
        ("always_off", "", 0.0),
        ("", "", 1.0),
    ):
        on = tracing.configure({**endpoint, "OTEL_TRACES_SAMPLER": sampler, "OTEL_TRACES_SAMPLER_ARG": arg})
        assert on is not None and on.provider is not None
        assert on.share == share
        assert on.provider.sampler.get_description().startswith("ParentBased{root:TraceIdRatioBased{")
        on.shutdown()


async def test_a_refused_request_ends_its_span_at_the_exit_without_an_attempt(
    tracer: tracing.Tracer, exported: InMemorySpanExporter
):
    exchange = _exchange(tracer, [])
    exchange.on_request_headers(
        _headers({":path": "/v1/chat/completions", ":method": "POST", "authorization": "Bearer inf_wrong"})
    )
    (request,) = exported.get_finished_spans()
    a = request.attributes or {}
    assert a["error.type"] == "invalid_api_key" and a["http.response.status_code"] == 401
    assert request.status.status_code is StatusCode.UNSET  # a client's error, not the server's
    assert [e.name for e in request.events] == ["failed"]


async def test_a_client_gone_mid_answer_is_an_error_span_and_the_attempt_says_no_response(
    tracer: tracing.Tracer, exported: InMemorySpanExporter
):
    exchange = _exchange(tracer, [])
    exchange.on_request_headers(
        _headers({":path": "/v1/chat/completions", ":method": "POST", "authorization": f"Bearer {KEY}"})
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    await exchange.on_request_body(ep.HttpBody(body=orjson.dumps(body), end_of_stream=True))
    exchange.abort()  # Envoy closed the stream before any answer
    request, attempt = _span(exported, SpanKind.SERVER), _span(exported, SpanKind.CLIENT)
    assert (request.attributes or {})["error.type"] == "stream_interrupted"
    assert request.status.status_code is StatusCode.ERROR
    assert (attempt.attributes or {})["error.type"] == "stream_interrupted"


def _attempt_first(traceparent: str | None) -> ep.ProcessingRequest:
    metadata = base_pb2.Metadata()
    metadata.filter_metadata["infery.target"].update({"model": "claude"})
    attrs = struct_pb2.Struct()
    attrs.update({"xds.upstream_host_metadata": text_format.MessageToString(metadata)})
    first = ep.ProcessingRequest()
    first.attributes["envoy.filters.http.ext_proc"].CopyFrom(attrs)
    fields = {"grant": sign(GRANT_KEY, Grant("r1", "w", "m1"), int(time.time() + 60))}
    fields["endpoint"] = "/v1/chat/completions"
    if traceparent is not None:
        fields["traceparent"] = traceparent
    first.metadata_context.filter_metadata["infery.attempt"].update(fields)
    return first


async def test_a_chains_attempt_is_a_child_of_the_request_span_named_in_the_metadata(
    tracer: tracing.Tracer, exported: InMemorySpanExporter
):
    first = _attempt_first(CLIENT_PARENT)
    attempt = AttemptExchange(_config(), MediaPolicy(), first, tracer)
    reply = attempt.on_request_headers(first.request_headers)
    # Traced, the attempt asks for its answer's headers (its status), and keeps its body buffered.
    assert reply.mode_override.response_header_mode == ProcessingMode.SEND
    assert reply.mode_override.request_body_mode == ProcessingMode.BUFFERED
    assert reply.mode_override.response_body_mode == ProcessingMode.NONE
    body = orjson.dumps({"model": "x", "messages": [{"role": "user", "content": "hi"}]})
    sent = _set((await attempt.on_request_body(ep.HttpBody(body=body))).request_body.response.header_mutation)
    answer = await attempt.on_response_headers(_headers({":status": "529"}))
    assert answer.WhichOneof("response") == "response_headers" and not answer.HasField("mode_override")
    attempt.abort()
    (span,) = exported.get_finished_spans()
    assert span.parent is not None and f"{span.parent.span_id:016x}" == CLIENT_PARENT.split("-")[2]
    assert sent["traceparent"] == _traceparent_of(span)
    a = span.attributes or {}
    assert span.name == "chat claude-up" and a["gen_ai.provider.name"] == "anthropic"
    assert a["http.response.status_code"] == 529 and a["error.type"] == "529"
    assert a["infery.request_id"] == "r1" and span.status.status_code is StatusCode.ERROR


async def test_an_attempt_without_an_answer_ends_as_no_response(
    tracer: tracing.Tracer, exported: InMemorySpanExporter
):
    first = _attempt_first(None)
    attempt = AttemptExchange(_config(), MediaPolicy(), first, tracer)
    attempt.on_request_headers(first.request_headers)
    attempt.abort()  # reset, or timed out: Envoy ended the stream
    (span,) = exported.get_finished_spans()
    assert (span.attributes or {})["error.type"] == tracing.NO_RESPONSE


async def test_untraced_attempts_ask_for_nothing_more():
    first = _attempt_first(None)
    attempt = AttemptExchange(_config(), MediaPolicy(), first)
    assert not attempt.on_request_headers(first.request_headers).HasField("mode_override")
    body = orjson.dumps({"model": "x", "messages": [{"role": "user", "content": "hi"}]})
    sent = _set((await attempt.on_request_body(ep.HttpBody(body=body))).request_body.response.header_mutation)
    assert "traceparent" not in sent and attempt.trace is None


async def test_off_no_span_and_the_clients_trace_context_passes_to_the_provider_untouched():
    records: list[usage_pb2.UsageRecord] = []
    exchange = _exchange(None, records)
    sent = await _answered(exchange, {"traceparent": CLIENT_PARENT, "tracestate": "v=1"})
    assert exchange.trace is None and "traceparent" not in sent  # nothing set: the client's goes on
    assert len(records) == 1


def test_off_configures_no_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    assert tracing.configure({}) is None
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"}
    assert tracing.configure({**endpoint, "OTEL_SDK_DISABLED": "true"}) is None
    assert tracing.configure({**endpoint, "OTEL_TRACES_EXPORTER": "none"}) is None
    on = tracing.configure(endpoint)
    assert on is not None and on.provider is not None
    on.shutdown()


def test_off_the_sdk_is_not_even_imported() -> None:
    """A process that does not trace loads no trace SDK, no exporter (and so no exporter thread)."""
    code = (
        "import sys; import ext_proc.__main__, ext_proc.tracing as t; assert t.configure({}) is None;"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk.trace')"
        " or m.startswith('opentelemetry.exporter')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
