"""Traces: one trace per request, from Envoy and ext_proc, exported by OTLP to a real receiver.

The gateway runs with OpenTelemetry's standard variable (OTEL_EXPORTER_OTLP_ENDPOINT) naming an
OTLP/gRPC receiver this test starts (tests/otlp_collector.py): ext_proc exports with the SDK's
OTLP exporter, Envoy with its OpenTelemetry tracer. Providers are the simulators, which record the
``traceparent`` each attempt was sent with.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from infery.stack import Stack
from simulators.otlp_collector import OtlpCollector, ReceivedSpan
from simulators.testing import SimulatorProcess
from tests.e2e.support import ADMIN_TOKEN, SIM_KEY, Admin, Tenant, eventually, new_tenant, start_gateway

PROMPT = "Tell me about the secret garden " + secrets.token_hex(6)
HI = [{"role": "user", "content": PROMPT}]


class Traced:
    def __init__(
        self,
        stack: Stack,
        admin: Admin,
        tenant: Tenant,
        sims: dict[str, SimulatorProcess],
        collector: OtlpCollector,
    ) -> None:
        self.stack, self.admin, self.tenant, self.sims, self.collector = stack, admin, tenant, sims, collector
        self.client = tenant.client(stack, timeout=30)
        self.answers: list[str] = []  # every completion text a test received (for the scan)

    def headers(self, **extra: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.tenant.key}", **extra}


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    with (
        OtlpCollector() as collector,
        SimulatorProcess("openai", api_key=SIM_KEY) as primary,
        SimulatorProcess("anthropic", api_key=SIM_KEY) as claude,
    ):
        stack = start_gateway(
            Path(tmp_path_factory.mktemp("traces")),
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",  # export each batch within 0.1 s (default 5 s)
            INFERY_EJECT_AFTER_FAILURES="1000",  # scripted failures must reach the primary
        )
        try:
            admin = Admin(stack.admin_url)
            admin.provider("openai", "openai", primary.base_url, SIM_KEY)
            admin.provider("anthropic", "anthropic", claude.base_url, SIM_KEY)
            admin.model("gpt-4o-mini", "openai", "gpt-4o-mini")
            admin.model("gpt-4o", "openai", "gpt-4o")
            admin.model("claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5")
            admin.call("PUT", "/routes/gpt-4o", {"fallbacks": ["claude-sonnet-4-5"], "retry_on": ["5xx"]})
            tenant = new_tenant(admin, stack, "traced")
            yield Traced(stack, admin, tenant, {"openai": primary, "anthropic": claude}, collector)
        finally:
            stack.stop()


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def _request_span(spans: list[ReceivedSpan]) -> ReceivedSpan:
    (span,) = [s for s in spans if s.service == "infery-ext-proc" and s.kind == "server"]
    return span


def _attempts(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return sorted(
        (s for s in spans if s.service == "infery-ext-proc" and s.kind == "client"), key=lambda s: s.start_ns
    )


def _has(service: str, kind: str, count: int = 1) -> object:
    return lambda spans: sum(1 for s in spans if s.service == service and s.kind == kind) >= count


def _envoy(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.service == "infery-envoy" and s.name.startswith(name)]


def _complete(attempts: int = 1) -> object:
    """A request's trace once ext_proc's spans and Envoy's ingress and router spans are in."""

    def check(spans: list[ReceivedSpan]) -> bool:
        return (
            _has("infery-ext-proc", "server")(spans)  # type: ignore[operator]
            and len(_attempts(spans)) >= attempts
            and bool(_envoy(spans, "ingress"))
            and len(_envoy(spans, "router")) >= attempts
        )

    return check


def _usage(traced: Traced, request_id: str) -> dict:
    return eventually(lambda: traced.admin.usage_record(request_id))


def _sent_parent(headers: dict[str, str], trace_id: str) -> str:
    """The span a provider was told is its parent (its traceparent's), checked to be of ``trace_id``."""
    version, sent_trace, parent_id, flags = headers["traceparent"].split("-")
    assert (version, sent_trace, flags) == ("00", trace_id, "01")
    return parent_id


def test_a_request_is_one_trace_with_its_attempt_inside_and_the_clients_traceparent_kept(traced: Traced):
    parent, trace_id, client_span = _traceparent()
    raw = traced.client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=HI, extra_headers={"traceparent": parent}
    )
    traced.answers.append(raw.parse().choices[0].message.content or "")
    request_id = raw.headers["x-request-id"]
    spans = traced.collector.wait_for(_complete(), trace_id)
    ids = {s.span_id for s in spans}

    # Envoy joined the client's trace: its ingress span is the client's span's child.
    (ingress,) = _envoy(spans, "ingress")
    assert ingress.parent_span_id == client_span and ingress.kind == "server"
    # ext_proc's request span is the child of Envoy's span for its ext_proc stream.
    request = _request_span(spans)
    (ext_proc_stream,) = [s for s in spans if s.span_id == request.parent_span_id]
    assert ext_proc_stream.service == "infery-envoy" and "ExternalProcessor" in ext_proc_stream.name
    assert ext_proc_stream.parent_span_id == ingress.span_id
    assert request.name == "POST /v1/chat/completions"
    assert request.attributes["infery.request_id"] == request_id
    assert [name for name, _ in request.events] == [
        "received",
        "admitted",
        "routed",
        "responding",
        "finished",
    ]

    # The provider attempt: inside the request span, with GenAI's attributes and the tokens charged.
    record = _usage(traced, request_id)
    (attempt,) = _attempts(spans)
    assert attempt.parent_span_id == request.span_id and attempt.kind == "client"
    assert attempt.name == "chat gpt-4o-mini"
    assert attempt.attributes | {"server.address": None} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.provider.name": "openai",
        "server.address": None,
        "infery.model": "gpt-4o-mini",
        "infery.provider": "openai",
        "infery.request_id": request_id,
        "http.response.status_code": 200,
        "gen_ai.usage.input_tokens": record["input_tokens"],
        "gen_ai.usage.output_tokens": record["output_tokens"],
    }
    assert attempt.status_code == 0 and attempt.start_ns < attempt.end_ns <= request.end_ns
    a = request.attributes
    assert (a["gen_ai.request.model"], a["gen_ai.response.model"], a["gen_ai.provider.name"]) == (
        "gpt-4o-mini",
        "gpt-4o-mini",
        "openai",
    )
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (
        record["input_tokens"],
        record["output_tokens"],
    )
    assert a["http.response.status_code"] == 200 and "error.type" not in a
    assert a["infery.workspace_id"] and a["infery.credits"]
    # The provider's request carries the same trace: with Envoy tracing, a model without
    # fallbacks gets Envoy's upstream span as its parent (Envoy's router writes it last).
    sent = traced.sims["openai"].requests()[-1]["headers"]
    parent_of_provider = _sent_parent(sent, trace_id)
    assert parent_of_provider in ids
    (router,) = _envoy(spans, "router")
    assert parent_of_provider == router.span_id and router.parent_span_id == ingress.span_id


def test_without_a_client_traceparent_envoy_and_ext_proc_share_one_trace(traced: Traced):
    raw = traced.client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
    traced.answers.append(raw.parse().choices[0].message.content or "")
    request_id = raw.headers["x-request-id"]
    (request,) = eventually(
        lambda: traced.collector.find(
            lambda s: s.kind == "server" and s.attributes.get("infery.request_id") == request_id
        ),
        timeout=15,
    )
    spans = traced.collector.wait_for(_complete(), request.trace_id)
    (ingress,) = _envoy(spans, "ingress")
    assert ingress.parent_span_id == ""  # Envoy began the trace; everything else is inside it
    assert {s.service for s in spans} == {"infery-envoy", "infery-ext-proc"}
    assert _attempts(spans)[0].parent_span_id == request.span_id


def test_a_fallback_is_two_attempts_each_sent_with_its_own_traceparent(traced: Traced):
    parent, trace_id, _ = _traceparent()
    traced.sims["openai"].script([{"status": 503}])
    raw = traced.client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HI, extra_headers={"traceparent": parent}
    )
    traced.answers.append(raw.parse().choices[0].message.content or "")
    assert raw.headers["x-fallback-from"] == "gpt-4o"
    spans = traced.collector.wait_for(_complete(attempts=2), trace_id)
    request = _request_span(spans)
    first, second = _attempts(spans)
    assert first.parent_span_id == second.parent_span_id == request.span_id
    assert (first.name, second.name) == ("chat gpt-4o", "chat claude-sonnet-4-5")
    assert first.attributes["http.response.status_code"] == 503 and first.attributes["error.type"] == "503"
    assert first.status_code == 2  # ERROR
    assert second.attributes["http.response.status_code"] == 200 and "error.type" not in second.attributes
    assert second.attributes["gen_ai.provider.name"] == "anthropic"
    assert first.end_ns <= second.start_ns
    # Each provider was told its own attempt is its parent (the upstream filter writes it after Envoy).
    assert _sent_parent(traced.sims["openai"].requests()[-1]["headers"], trace_id) == first.span_id
    assert _sent_parent(traced.sims["anthropic"].requests()[-1]["headers"], trace_id) == second.span_id
    a = request.attributes
    assert a["infery.fallback_from"] == "gpt-4o" and a["gen_ai.response.model"] == "claude-sonnet-4-5"
    record = _usage(traced, raw.headers["x-request-id"])
    assert a["gen_ai.usage.output_tokens"] == record["output_tokens"]
    assert (
        "fallback",
        {"infery.fallback_from": "gpt-4o", "infery.model": "claude-sonnet-4-5"},
    ) in request.events


def test_envoy_batches_its_spans_as_the_sdk_does(traced: Traced):
    """Envoy's tracer exports every 5 spans by default (one export every other request); the
    bootstrap gives it the SDK's batch (512 spans) and the stack's OTEL_BSP_SCHEDULE_DELAY (100 ms
    here): Envoy's own runtime says so, and its spans still arrive (the other tests wait for them)."""
    entries = traced.stack.envoy_admin("/runtime").json()["entries"]
    assert entries["tracing.opentelemetry.min_flush_spans"]["final_value"] == "512"
    assert entries["tracing.opentelemetry.flush_interval_ms"]["final_value"] == "100"
    before = _envoy_counter(traced.stack, "tracing.opentelemetry.spans_sent")
    raw = traced.client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
    traced.answers.append(raw.parse().choices[0].message.content or "")
    eventually(lambda: _envoy_counter(traced.stack, "tracing.opentelemetry.spans_sent") >= before + 3)


def test_a_stream_is_traced_to_its_end_with_the_tokens_charged(traced: Traced):
    parent, trace_id, _ = _traceparent()
    with httpx.stream(
        "POST",
        f"{traced.stack.base_url}/chat/completions",
        json={"model": "gpt-4o-mini", "messages": HI, "stream": True},
        headers=traced.headers(traceparent=parent),
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        text = resp.read().decode()
        request_id = resp.headers["x-request-id"]
    for line in text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                traced.answers.append(choice.get("delta", {}).get("content") or "")
    spans = traced.collector.wait_for(_complete(), trace_id)
    request = _request_span(spans)
    (attempt,) = _attempts(spans)
    record = _usage(traced, request_id)
    assert [name for name, _ in request.events][-2:] == ["streaming", "finished"]
    assert request.attributes["infery.stream"] is True
    assert attempt.attributes["gen_ai.usage.output_tokens"] == record["output_tokens"] > 0


def test_a_refused_request_is_a_span_without_an_attempt(traced: Traced):
    parent, trace_id, _ = _traceparent()
    bad_key = "inf_" + secrets.token_hex(16)
    resp = httpx.post(
        f"{traced.stack.base_url}/chat/completions",
        json={"model": "gpt-4o-mini", "messages": HI},
        headers={"authorization": f"Bearer {bad_key}", "traceparent": parent},
        timeout=30,
    )
    assert resp.status_code == 401
    spans = traced.collector.wait_for(_has("infery-ext-proc", "server"), trace_id)
    request = _request_span(spans)
    assert not _attempts(spans)
    a = request.attributes
    assert a["error.type"] == "invalid_api_key" and a["http.response.status_code"] == 401
    assert "infery.workspace_id" not in a and "gen_ai.request.model" not in a
    # Answered in the headers phase: the id the client got, Envoy's (its access log has it too).
    assert a["infery.request_id"] == resp.headers["x-request-id"]
    assert [name for name, _ in request.events] == ["failed"]
    traced.answers.append(bad_key)  # a key, scanned for below


def test_the_admin_api_has_spans_too_but_not_its_probes(traced: Traced):
    traced.admin.call("GET", "/workspaces/traced")
    route = "GET /admin/v1/workspaces/{name}"  # the route's template, never the workspace's name
    (served, *_) = eventually(
        lambda: traced.collector.find(lambda s: s.service == "infery-control-plane" and s.name == route),
        timeout=15,
    )
    assert served.kind == "server"
    status = served.attributes.get("http.response.status_code", served.attributes.get("http.status_code"))
    assert status == 200
    control_plane = traced.collector.find(lambda s: s.service == "infery-control-plane")
    assert not [s for s in control_plane if "healthz" in s.name or "readyz" in s.name or "metrics" in s.name]


def test_no_span_holds_a_prompt_a_completion_or_a_key(traced: Traced):
    """Run last: every span this module's requests made, Envoy's and the control plane's included."""
    secrets_used = [
        PROMPT,
        traced.tenant.key,
        SIM_KEY,
        ADMIN_TOKEN,
        *(a for a in traced.answers if len(a) >= 8),
    ]
    assert len(secrets_used) > 5
    spans = list(traced.collector.all())
    assert len(spans) > 20
    for span in spans:
        text = json.dumps([span.name, span.attributes, span.events], default=str)
        for secret in secrets_used:
            assert secret not in text, (span.service, span.name)
        assert "sk-sim-" not in text and "inf_" not in text and "Bearer" not in text


@contextlib.contextmanager
def _sampled_gateway(
    tmp_path: Path, share: str, name: str, **env: str
) -> Iterator[tuple[OtlpCollector, Stack, Admin, Tenant]]:
    """A gateway of its own tracing at ``share`` (parent-based ratio) into a collector, one
    OpenAI-format model and a tenant; stopped on the way out (ext_proc exports what its batch
    still holds), the collector still readable after."""
    with (
        OtlpCollector() as collector,
        SimulatorProcess("openai", api_key=SIM_KEY) as sim,
    ):
        stack = start_gateway(
            tmp_path,
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
            OTEL_TRACES_SAMPLER="parentbased_traceidratio",
            OTEL_TRACES_SAMPLER_ARG=share,
            **env,
        )
        try:
            admin = Admin(stack.admin_url)
            admin.provider("openai", "openai", sim.base_url, SIM_KEY)
            admin.model("gpt-4o-mini", "openai", "gpt-4o-mini")
            yield collector, stack, admin, new_tenant(admin, stack, name)
        finally:
            stack.stop()


def test_a_sampled_share_keeps_or_drops_envoys_and_ext_procs_spans_together(tmp_path: Path):
    """``OTEL_TRACES_SAMPLER=parentbased_traceidratio`` at 0.5: Envoy samples about half of the
    requests (``random_sampling``, from the control plane) and ext_proc's parent-based sampler
    follows Envoy's decision: the traces with ext_proc's request span are exactly those with
    Envoy's span of the ext_proc stream, and exactly those with Envoy's own request span
    (``ingress``). The share is binomial: 60 requests at 0.5 fall within 10..50 but for a chance
    of about 10^-7.

    The ingress span is the one a metered request's new id could lose: Envoy (since 1.36)
    decides again when ext_proc makes it re-pick the route, from the x-request-id ext_proc gave
    the request -- the trace reason in its character 14, else a roll on its first 8 hex digits
    (README, "Traces"). Each id the client got keys a usage record: Envoy's second decision
    never rewrites it."""
    with _sampled_gateway(tmp_path, "0.5", "sampled") as (collector, stack, admin, tenant):
        client = tenant.client(stack, timeout=30)
        ids = []
        for _ in range(60):
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
            ids.append(raw.headers["x-request-id"])

        def traces(service: str, kind: str, name: str = "") -> set[str]:
            return {
                s.trace_id
                for s in collector.all()
                if s.service == service and s.kind == kind and s.name.startswith(name)
            }

        def settled() -> set[str]:
            ext_proc, envoy = traces("infery-ext-proc", "server"), traces("infery-envoy", "client")
            ingress = traces("infery-envoy", "server", "ingress")
            assert ext_proc and ext_proc == envoy == ingress, (len(ext_proc), len(envoy), len(ingress))
            return ext_proc

        kept = eventually(settled, timeout=20, interval=0.2)
        assert 10 <= len(kept) <= 50, len(kept)
        assert len(set(ids)) == 60
        for request_id in ids:
            eventually(lambda request_id=request_id: admin.usage_record(request_id))


def _envoy_counter(stack: Stack, name: str) -> int:
    """One of Envoy's counters, from its admin (0 while Envoy has not made it)."""
    text = stack.envoy_admin("/stats", filter=f"^{name}$").text
    values = [int(line.split(": ")[1]) for line in text.splitlines() if line.startswith(f"{name}: ")]
    return values[0] if values else 0


@pytest.mark.parametrize("envoy_traces", [True, False], ids=["envoy_traces", "ext_proc_alone"])
def test_a_client_cannot_force_its_request_to_be_traced(tmp_path: Path, envoy_traces: bool):
    """At a sampled share of 0 the operator keeps no trace, whatever a client sends: neither
    ``x-client-trace-id`` (Envoy's ``client_sampling`` would force the trace, trace reason ``b``)
    nor a W3C ``traceparent`` whose sampled flag is set. A traced request costs ext_proc about 2x
    the CPU and fills the operator's trace store; the share is the operator's setting.

    Absence is made certain, not waited for by the clock: Envoy's counters say how each request's
    tracing was decided, Envoy's span buffer is flushed (its flush timer fired once after the last
    request), and ext_proc exports what it still holds when it stops.

    ``ext_proc_alone``: Envoy does not trace (``INFERY_ENVOY_TRACES_ENDPOINT=off``), so no span of
    Envoy's parents ext_proc's request span: the client's ``traceparent`` does, and its sampled
    flag must not decide ext_proc's sampling either."""
    off = {} if envoy_traces else {"INFERY_ENVOY_TRACES_ENDPOINT": "off"}
    # Leaving the block stops the stack: ext_proc exports what its batch still holds.
    with _sampled_gateway(tmp_path, "0", "unforced", **off) as (collector, stack, _admin, tenant):
        client = tenant.client(stack, timeout=30)
        client_ids, trace_ids = [], []
        for _ in range(15):
            trace_id = secrets.token_hex(16)
            client_ids.append(trace_id)
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=HI,  # type: ignore[arg-type]
                extra_headers={"x-client-trace-id": trace_id},
            )
        for _ in range(15):
            parent, trace_id, _ = _traceparent()  # sampled flag 01
            trace_ids.append(trace_id)
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=HI,  # type: ignore[arg-type]
                extra_headers={"traceparent": parent},
            )
        # Refused in the headers phase (no key): no route refresh re-decides after Envoy's first
        # decision, and a client needs no key to send these.
        for _ in range(10):
            parent, trace_id, _ = _traceparent()
            trace_ids.append(trace_id)
            resp = httpx.post(
                f"{stack.base_url}/chat/completions",
                json={"model": "gpt-4o-mini", "messages": HI},
                headers={"traceparent": parent, "x-client-trace-id": secrets.token_hex(16)},
                timeout=30,
            )
            assert resp.status_code == 401
        # Envoy's decision for each request: never the client's.
        assert envoy_traces or _envoy_counter(stack, "tracing.opentelemetry.timer_flushed") == 0
        assert _envoy_counter(stack, "http.infery.tracing.client_enabled") == 0
        assert _envoy_counter(stack, "http.infery.tracing.random_sampling") == 0
        # Whatever Envoy buffered is sent (or there was nothing to send).
        flushed = _envoy_counter(stack, "tracing.opentelemetry.timer_flushed")
        if envoy_traces:
            eventually(
                lambda: _envoy_counter(stack, "tracing.opentelemetry.timer_flushed") > flushed, timeout=15
            )
    spans = list(collector.all())  # the stack stopped: everything it held was exported
    kept = {(s.service, s.kind, s.name) for s in spans if s.service != "infery-control-plane"}
    assert not kept, kept
    assert not [s for s in spans if s.trace_id in trace_ids]
