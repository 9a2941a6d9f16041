"""ext_proc's metrics from usage records: bounded labels, and a metric never fails a request."""

from __future__ import annotations

import socket
import time
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from infery_proto.v1 import usage_pb2
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from ext_proc.metrics import MESSAGE_BUCKETS, OTHER, PHASES, GatewayMetrics, serve


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
