"""ext_proc's metrics from usage records: bounded labels, and a metric never fails a request."""

from __future__ import annotations

import math
import re
import socket
import time
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from infery_proto.v1 import usage_pb2
from infery_proto.wire import ERRORS
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ext_proc.metrics import (
    DURATION_BUCKETS,
    MESSAGE_BUCKETS,
    OPERATIONS,
    OTHER,
    PHASES,
    TOKEN_BUCKETS,
    TPOT_BUCKETS,
    TTFT_BUCKETS,
    GatewayMetrics,
    serve,
)


def _record(**fields: object) -> usage_pb2.UsageRecord:
    base: dict[str, object] = {
        "request_id": "r1",
        "workspace_id": "ws-1",
        "member_id": "member-secret-id",
        "key_id": "key-secret-id",
        "endpoint": "/v1/chat/completions",
        "model_requested": "gpt-4o",
        "model_used": "gpt-4o",
        "provider": "openai",
        "status": 200,
        "input_tokens": 10,
        "cached_input_tokens": 4,
        "output_tokens": 5,
        "credits": "0.000123",
        "latency_ms": 120.0,
    }
    return usage_pb2.UsageRecord(**{**base, **fields})  # type: ignore[arg-type]


def test_workspace_is_a_label_only_when_asked_and_keys_members_never() -> None:
    for enabled in (False, True):
        metrics = GatewayMetrics(workspace_label=enabled)
        recorded: list[usage_pb2.UsageRecord] = []
        record = metrics.recorder(recorded.append)
        record(_record())
        record(_record(idempotent_replay=True))
        text = generate_latest(metrics.registry).decode()
        assert len(recorded) == 2
        assert ('workspace="ws-1"' in text) is enabled
        assert "key-secret-id" not in text and "member-secret-id" not in text
        assert 'gen_ai_token_type="cached"' in text
        assert "infery_idempotent_replays_total" in text


def test_unknown_endpoints_are_one_label_value() -> None:
    metrics = GatewayMetrics()
    metrics.observe(_record(endpoint="/v1/anything/a1b2c3", status=404, error_code="not_found"))
    text = generate_latest(metrics.registry).decode()
    assert 'endpoint="other"' in text and "a1b2c3" not in text


def test_a_model_the_client_made_up_is_no_label_value() -> None:
    metrics = GatewayMetrics()
    for n in range(3):
        metrics.observe(
            _record(
                model_requested=f"made-up-{n}",
                model_used="",
                provider="",
                status=404,
                error_code="model_not_found",
            )
        )
    text = generate_latest(metrics.registry).decode()
    assert "made-up" not in text and 'gen_ai_request_model="other"' in text


def test_an_error_code_not_the_gateways_own_is_no_label_value() -> None:
    """An OpenAI-format provider's stream error keeps the provider's ``error.code``
    (ext_proc/translators/chat_openai.py): as a label, a provider that puts a request id in it
    (or anything it echoes) would grow two families' series without bound."""
    metrics = GatewayMetrics()
    for n in range(3):
        metrics.observe(_record(status=200, error_code=f"req_{n}_provider_specific"))
    metrics.observe(_record(status=499, error_code="stream_interrupted"))
    metrics.observe(_record(status=429, error_code="rate_limit_exceeded"))
    text = generate_latest(metrics.registry).decode()
    assert "provider_specific" not in text
    assert 'error_code="other"' in text and 'error_type="other"' in text
    assert 'error_code="stream_interrupted"' in text and 'error_type="rate_limit_exceeded"' in text


def test_estimated_and_rejected_usage_are_counted() -> None:
    metrics = GatewayMetrics()
    metrics.observe(
        _record(usage_estimated=True, usage_rejected="provider usage prompt_tokens=-1 is negative")
    )
    metrics.observe(_record())
    text = generate_latest(metrics.registry).decode()
    assert "infery_usage_estimated_total 1.0" in text and "infery_usage_rejected_total 1.0" in text
    assert "negative" not in text  # the reason is free text: logs, not labels


def test_a_failing_metric_never_fails_the_request() -> None:
    metrics = GatewayMetrics()
    recorded: list[usage_pb2.UsageRecord] = []
    record = metrics.recorder(recorded.append)
    record(_record(credits="not-a-number"))  # float() fails inside observe
    assert len(recorded) == 1


def test_a_taken_port_costs_the_metrics_not_the_process() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert not serve(GatewayMetrics(), taken.getsockname()[1], "127.0.0.1")


def test_a_configuration_problem_is_a_gauge() -> None:
    metrics = GatewayMetrics(workspace_label=False)
    problem = ""
    metrics.watch_config(lambda: problem)
    assert "infery_xds_config_problem 0.0" in generate_latest(metrics.registry).decode()
    problem = "ApiKey 'k1' refused: bad"
    assert "infery_xds_config_problem 1.0" in generate_latest(metrics.registry).decode()


def test_answers_not_kept_are_counted() -> None:
    class Store:
        keep_failures = 0

    store = Store()
    metrics = GatewayMetrics()
    metrics.watch_responses(store)
    assert "infery_responses_not_kept_total 0.0" in generate_latest(metrics.registry).decode()
    store.keep_failures = 2
    assert "infery_responses_not_kept_total 2.0" in generate_latest(metrics.registry).decode()


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([*PHASES, "", "some_future_kind"]),
            st.one_of(st.sampled_from(MESSAGE_BUCKETS), st.floats(0, 10, allow_nan=False)),
        ),
        max_size=40,
    )
)
def test_message_times_expose_what_a_prometheus_histogram_would(observed: list[tuple[str, float]]) -> None:
    """The lock-free message counts read exactly as prometheus-client's own Counter and
    Histogram fed the same answers: same names, labels, buckets (bounds inclusive), counts."""
    ours = GatewayMetrics()
    theirs = CollectorRegistry()
    counter = Counter("infery_ext_proc_messages", "x", ("phase",), registry=theirs)
    histogram = Histogram(
        "infery_ext_proc_message_duration_seconds", "x", ("phase",), buckets=MESSAGE_BUCKETS, registry=theirs
    )
    for phase in PHASES:  # every phase is exported, answered or not
        counter.labels(phase)
        histogram.labels(phase)
    now = time.perf_counter()
    with mock.patch("ext_proc.metrics.time.perf_counter", return_value=now):
        for phase, seconds in observed:
            arrived = now - seconds
            ours.messages.answered(phase, arrived)
            label = phase if phase in PHASES else OTHER
            counter.labels(label).inc()
            histogram.labels(label).observe(now - arrived)  # the same float ours computes

    def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect()
            if family.name.startswith("infery_ext_proc_message")
            for s in family.samples
            if not s.name.endswith("_created")
        }

    expected, got = samples(theirs), samples(ours.registry)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


class _PrometheusClientMetrics:
    """The per-request metrics as prometheus-client's own Counter and Histogram counted them
    (``GatewayMetrics.observe`` before the plain families): the oracle the plain ones must equal."""

    def __init__(self, workspace_label: bool) -> None:
        self.registry = r = CollectorRegistry()
        self.ws = workspace_label
        ws = ("workspace",) if workspace_label else ()
        genai = (
            "gen_ai_operation_name",
            "gen_ai_request_model",
            "gen_ai_response_model",
            "gen_ai_provider_name",
        )
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens used per request (OTel gen_ai.client.token.usage), by gen_ai_token_type.",
            (*genai, "gen_ai_token_type", *ws),
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "gen_ai_server_request_duration_seconds",
            "Time from the request's arrival to its last byte (OTel gen_ai.server.request.duration).",
            (*genai, "error_type", *ws),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first streamed chunk (OTel gen_ai.server.time_to_first_token).",
            (*genai, *ws),
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "Time per output token after the first, streamed responses"
            " (OTel gen_ai.server.time_per_output_token).",
            (*genai, *ws),
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "infery_requests",
            "Metered requests by endpoint, HTTP status and error code.",
            ("endpoint", "status", "error_code", *ws),
            registry=r,
        )
        self.credits = Counter(
            "infery_credits_charged",
            "Credits charged (1 credit = US$1), by the model that served.",
            ("gen_ai_response_model", *ws),
            registry=r,
        )
        self.fallbacks = Counter(
            "infery_fallbacks",
            "Requests a fallback served, from the requested model to the one that answered.",
            ("from_model", "to_model", *ws),
            registry=r,
        )
        self.replays = Counter(
            "infery_idempotent_replays", "Answers replayed from the idempotency store.", ws, registry=r
        )
        self.usage_estimated = Counter(
            "infery_usage_estimated",
            "Requests charged on the gateway's token estimate (usage missing, invalid, or the stream cut).",
            ws,
            registry=r,
        )
        self.usage_rejected = Counter(
            "infery_usage_rejected",
            "Requests whose provider-reported usage was refused as invalid.",
            ws,
            registry=r,
        )

    def observe(self, rec: usage_pb2.UsageRecord) -> None:
        ws = (rec.workspace_id,) if self.ws else ()
        operation = OPERATIONS.get(rec.endpoint, OTHER)
        model_used = rec.model_used
        genai = (operation, rec.model_requested if model_used else OTHER, model_used, rec.provider, *ws)
        endpoint = rec.endpoint if operation != OTHER else OTHER
        known = not rec.error_code or rec.error_code in ERRORS or rec.error_code == "stream_interrupted"
        error_code = rec.error_code if known else OTHER
        self.requests.labels(endpoint, str(rec.status), error_code, *ws).inc()
        latency_s = rec.latency_ms / 1000
        if rec.idempotent_replay:
            (self.replays.labels(*ws) if ws else self.replays).inc()
        error = error_code or (str(rec.status) if rec.status >= 400 else "")
        self.duration.labels(*genai[:4], error, *ws).observe(latency_s)
        if not model_used:
            return
        if rec.fallback_from:
            self.fallbacks.labels(rec.fallback_from, model_used, *ws).inc()
        if rec.status < 400 and not rec.idempotent_replay:
            head = genai[:4]
            series = [self.token_usage.labels(*head, kind, *ws) for kind in ("input", "output", "cached")]
            ttft, tpot = self.ttft.labels(*genai), self.tpot.labels(*genai)
            series[0].observe(rec.input_tokens)
            series[1].observe(rec.output_tokens)
            if rec.cached_input_tokens:
                series[2].observe(rec.cached_input_tokens)
            if rec.ttft_ms > 0 and rec.stream:
                ttft.observe(rec.ttft_ms / 1000)
                if rec.output_tokens > 1:
                    tpot.observe(max((latency_s - rec.ttft_ms / 1000) / (rec.output_tokens - 1), 0.0))
        if rec.usage_estimated:
            (self.usage_estimated.labels(*ws) if ws else self.usage_estimated).inc()
        if rec.usage_rejected:
            (self.usage_rejected.labels(*ws) if ws else self.usage_rejected).inc()
        if rec.credits and rec.credits != "0":
            self.credits.labels(model_used, *ws).inc(float(rec.credits))


_SERIES_TOKENS = st.one_of(
    st.sampled_from([0, 1, 2, 4, 5, 64, 65, 67108864, 67108865]), st.integers(0, 10**9)
)
_SECONDS_MS = st.one_of(
    st.sampled_from([0.0, 10.0, 1000.0, 81920.0, 81921.0]), st.floats(0, 200_000, allow_nan=False)
)
_RECORDS = st.builds(
    usage_pb2.UsageRecord,
    workspace_id=st.sampled_from(["ws-1", "ws-2", 'ws"} 1\nx{y="\\']),  # escaped in the text as theirs
    endpoint=st.sampled_from(["/v1/chat/completions", "/v1/embeddings", "/v1/messages", "/v1/made-up"]),
    model_requested=st.sampled_from(["gpt-4o", "gpt-4o-mini", "typo"]),
    model_used=st.sampled_from(["", "gpt-4o", "claude-sonnet-4-5"]),
    provider=st.sampled_from(["", "openai", "anthropic"]),
    fallback_from=st.sampled_from(["", "gpt-4o"]),
    status=st.sampled_from([200, 400, 404, 429, 502]),
    error_code=st.sampled_from(["", "rate_limit_exceeded", "upstream_error", "req_a1b2c3"]),
    input_tokens=_SERIES_TOKENS,
    output_tokens=_SERIES_TOKENS,
    cached_input_tokens=_SERIES_TOKENS,
    credits=st.one_of(
        st.sampled_from(["", "0", "0.000123", "not-a-number", "-1"]),
        st.decimals(0, 100, allow_nan=False, places=9).map(str),
    ),
    latency_ms=_SECONDS_MS,
    ttft_ms=_SECONDS_MS,
    stream=st.booleans(),
    idempotent_replay=st.booleans(),
    usage_estimated=st.booleans(),
    usage_rejected=st.sampled_from(["", "provider usage prompt_tokens=-1 is negative"]),
)


def _exposition(registry: CollectorRegistry) -> tuple[list[str], dict[tuple[str, tuple[str, ...]], float]]:
    """The families' heads and samples, and the text's lines without ``_created`` values (the
    children of two registries are made at different instants)."""
    text = generate_latest(registry).decode()
    samples: dict[tuple[str, tuple[str, ...]], float] = {}
    heads = []
    for family in text_string_to_metric_families(text):
        if family.name.startswith(("infery_ext_proc_", "infery_xds_")):
            continue  # not per request: MessageTimes' own test, and the xDS gauges
        heads.append(f"{family.name} {family.type} {family.documentation}")
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return heads, samples


@settings(max_examples=150, deadline=None)
@given(st.booleans(), st.lists(_RECORDS, max_size=25))
def test_request_metrics_expose_what_prometheus_client_would(
    workspace_label: bool, records: list[usage_pb2.UsageRecord]
) -> None:
    """The plain per-request families read exactly as prometheus-client's Counter and Histogram
    fed the same usage records: same families, help, types, label sets, buckets (bounds inclusive),
    values, ``_created`` series, and the same records failing (a credit that is no number)."""
    before = time.time()
    ours = GatewayMetrics(workspace_label=workspace_label)
    theirs = _PrometheusClientMetrics(workspace_label)
    for rec in records:
        failures = []
        for metrics in (ours, theirs):
            try:
                metrics.observe(rec)
            except ValueError as exc:
                failures.append(type(exc))
        assert len(failures) in (0, 2), rec
    after = time.time()
    (our_heads, got), (their_heads, expected) = _exposition(ours.registry), _exposition(theirs.registry)
    assert our_heads == their_heads
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if key[0].endswith("_created"):
            assert before <= got[key] <= after, key
        else:
            assert got[key] == value or (math.isnan(value) and math.isnan(got[key])), key
    # The text itself, line for line, but for the instants the children were made.
    created = re.compile(r"^\S+_created\{?.*\s\S+$", re.M)
    assert created.sub("", generate_latest(theirs.registry).decode()) in created.sub(
        "", generate_latest(ours.registry).decode()
    )
