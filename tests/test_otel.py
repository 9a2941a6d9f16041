"""infery_proto/otel.py: the one reading of OpenTelemetry's variables both processes share."""

from __future__ import annotations

import pytest
from infery_proto.otel import grpc_host_port, sampled_share, span_batching, traces_endpoint


def test_tracing_is_on_only_with_an_otlp_endpoint_and_not_disabled() -> None:
    assert traces_endpoint({}) is None
    assert traces_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}) == "http://c:4317"
    # The traces-only variable wins, as in the SDK.
    both = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1",
    }
    assert traces_endpoint(both) == "http://t:1"
    assert traces_endpoint({**both, "OTEL_SDK_DISABLED": "TRUE"}) is None
    assert traces_endpoint({**both, "OTEL_TRACES_EXPORTER": "none"}) is None
    assert traces_endpoint({**both, "OTEL_TRACES_EXPORTER": "console,otlp"}) == "http://t:1"
    assert traces_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}) is None


def test_the_sampled_share_is_the_samplers_ratio() -> None:
    assert sampled_share({}) == 1.0
    assert (
        sampled_share({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"})
        == 0.1
    )
    assert sampled_share({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "7"}) == 1.0
    assert sampled_share({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "x"}) == 1.0
    assert sampled_share({"OTEL_TRACES_SAMPLER": "parentbased_always_off"}) == 0.0
    assert sampled_share({"OTEL_TRACES_SAMPLER": "always_on", "OTEL_TRACES_SAMPLER_ARG": "0.1"}) == 1.0


def test_a_ratio_that_is_not_a_number_is_a_bad_argument() -> None:
    """float() reads "nan": clamped, it stayed NaN, which ext_proc's TraceIdRatioBased cannot take
    (ext_proc would not start) and Envoy's random_sampling would get as its percentage."""
    for arg in ("nan", "NaN", "-nan"):
        share = sampled_share({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": arg})
        assert share == 1.0, arg


def test_an_endpoint_is_read_as_the_sdks_grpc_exporter_reads_it() -> None:
    assert grpc_host_port("http://collector:4317", {}) == ("collector", 4317, False)
    assert grpc_host_port("https://otlp.example.com", {}) == ("otlp.example.com", 4317, True)
    assert grpc_host_port("collector:55680", {}) == ("collector", 55680, True)
    assert grpc_host_port("collector:55680", {"OTEL_EXPORTER_OTLP_INSECURE": "true"}) == (
        "collector",
        55680,
        False,
    )
    with pytest.raises(ValueError, match="no host"):
        grpc_host_port("http://:4317", {})


def test_span_batching_is_the_sdks_by_the_same_variables() -> None:
    assert span_batching({}) == (512, 5000)
    assert span_batching({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "64", "OTEL_BSP_SCHEDULE_DELAY": " 100 "}) == (
        64,
        100,
    )
    for bad in ("", "0", "-5", "1.5", "soon"):
        assert span_batching({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": bad, "OTEL_BSP_SCHEDULE_DELAY": bad}) == (
            512,
            5000,
        )
