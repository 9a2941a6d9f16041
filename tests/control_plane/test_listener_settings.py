"""The control plane's settings model: Envoy's listener from the same variables, its access log."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from google.protobuf import json_format

from control_plane.settings import Settings
from control_plane.xds.envoy_config import ACCESS_LOG_FORMAT, ListenerSettings, listener


def _access_logs(s: ListenerSettings) -> list[dict[str, Any]]:
    hcm = listener(s).filter_chains[0].filters[0].typed_config
    return list(json_format.MessageToDict(hcm).get("accessLog", []))


def test_the_listener_gets_every_listener_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    env = {
        "INFERY_LISTEN_HOST": "10.0.0.1",
        "INFERY_LISTEN_PORT": "9080",
        "INFERY_MAX_REQUEST_BYTES": "1048576",
        "INFERY_TLS_CERT_FILE": "/tls/cert.pem",
        "INFERY_TLS_KEY_FILE": "/tls/key.pem",
        "INFERY_UPSTREAM_CA_FILE": "/tls/ca.pem",
        "INFERY_REQUEST_TIMEOUT_S": "300",
        "INFERY_CONNECT_TIMEOUT_S": "2.5",
        "INFERY_EJECT_AFTER_FAILURES": "3",
        "INFERY_EJECTION_S": "20",
        "INFERY_REQUEST_HEADERS_TIMEOUT_S": "4",
        "INFERY_REQUEST_RECEIVE_TIMEOUT_S": "30",
        "INFERY_IDLE_TIMEOUT_S": "15",
        "INFERY_MAX_STREAMS_PER_CONNECTION": "50",
        "INFERY_CONNECTION_BUFFER_BYTES": "262144",
        "INFERY_CLIENT_SEND_TIMEOUT_S": "10",
        "INFERY_EXT_PROC_MESSAGE_TIMEOUT_S": "2",
        "INFERY_EXT_PROC_MAX_MESSAGE_TIMEOUT_S": "30",
        "INFERY_ENVOY_ACCESS_LOG": "/var/log/envoy/access.log",
        "INFERY_ENVOY_TRACES_ENDPOINT": "http://collector:4317",
    }
    built = Settings.from_env(env).listener()
    assert built == ListenerSettings(
        "10.0.0.1",
        9080,
        1048576,
        "/tls/cert.pem",
        "/tls/key.pem",
        "/tls/ca.pem",
        300,
        2.5,
        3,
        20,
        4,
        30,
        15,
        50,
        262144,
        10,
        2,
        30,
        "/var/log/envoy/access.log",
        "http://collector:4317",
        1.0,
    )
    assert Settings.from_env({}).listener() == ListenerSettings(port=8080)  # the same defaults
    # Every field has its variable (the sampled share is OpenTelemetry's: OTEL_TRACES_SAMPLER_ARG).
    assert len(dataclasses.fields(ListenerSettings)) == len(env) + 1


def test_envoy_access_log_is_json_to_stdout_a_file_or_off() -> None:
    (stdout,) = _access_logs(ListenerSettings())
    assert stdout["name"] == "envoy.access_loggers.stdout"
    assert stdout["typedConfig"]["logFormat"]["jsonFormat"] == ACCESS_LOG_FORMAT
    (file,) = _access_logs(ListenerSettings(access_log="/var/log/envoy/access.log"))
    assert file["name"] == "envoy.access_loggers.file"
    assert file["typedConfig"]["path"] == "/var/log/envoy/access.log"
    assert _access_logs(ListenerSettings(access_log="off")) == []


def test_the_access_log_names_no_header_that_may_carry_a_secret() -> None:
    commands = " ".join(ACCESS_LOG_FORMAT.values()).upper()
    assert "AUTHORIZATION" not in commands and "API-KEY" not in commands and "%PATH(NQ:" in commands
    assert "REQ(:PATH)" not in commands  # with its query string, where a client may put a key


@pytest.mark.parametrize("value", ["access.log", "stderr", "./x.log"])
def test_a_relative_access_log_path_is_refused(value: str) -> None:
    with pytest.raises(
        ValueError, match="INFERY_ENVOY_ACCESS_LOG: must be stdout, off or an absolute file path"
    ):
        Settings.from_env({"INFERY_ENVOY_ACCESS_LOG": value})


def test_listener_tls_files_go_together() -> None:
    with pytest.raises(ValueError, match="INFERY_TLS_CERT_FILE and INFERY_TLS_KEY_FILE go together"):
        Settings.from_env({"INFERY_TLS_CERT_FILE": "/tls/cert.pem"})


def _tracing(s: ListenerSettings) -> dict[str, Any] | None:
    hcm = json_format.MessageToDict(listener(s).filter_chains[0].filters[0].typed_config)
    return hcm.get("tracing")


def test_envoy_traces_only_when_an_otlp_endpoint_is_set() -> None:
    assert _tracing(ListenerSettings()) is None  # off: no tracer in Envoy's listener at all
    tracing = _tracing(ListenerSettings(traces_endpoint="http://collector.observability:4317"))
    assert tracing is not None and tracing["spawnUpstreamSpan"] is True
    assert tracing["randomSampling"] == {"value": 100.0}
    # A client's x-client-trace-id forces no trace: set, at 0 (proto3 leaves the 0 out of the
    # dict); left out, Envoy's default would force one for every such request (100%).
    assert tracing["clientSampling"].get("value", 0.0) == 0.0
    config = tracing["provider"]["typedConfig"]
    assert tracing["provider"]["name"] == "envoy.tracers.opentelemetry"
    assert config["serviceName"] == "infery-envoy"
    grpc = config["grpcService"]["googleGrpc"]
    assert grpc["targetUri"] == "collector.observability:4317" and "channelCredentials" not in grpc
    tls = _tracing(ListenerSettings(traces_endpoint="https://otlp.example.com"))
    assert tls is not None
    grpc = tls["provider"]["typedConfig"]["grpcService"]["googleGrpc"]
    assert grpc["targetUri"] == "otlp.example.com:4317"
    assert grpc["channelCredentials"] == {"sslCredentials": {}}


def test_envoys_tracing_follows_the_control_planes_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317")
    assert Settings.from_env({}).listener().traces_endpoint == "http://otel:4317"
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert Settings.from_env({}).listener().traces_endpoint == ""
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    sampled = Settings.from_env({}).listener()
    assert sampled.traces_sampled == 0.25
    assert _tracing(sampled) is not None and _tracing(sampled)["randomSampling"] == {"value": 25.0}  # type: ignore[index]
    # Envoy may send elsewhere (a replica's own collector), or not trace while the control plane does.
    env = {"INFERY_ENVOY_TRACES_ENDPOINT": "http://node-agent:4317"}
    assert Settings.from_env(env).listener().traces_endpoint == "http://node-agent:4317"
    assert Settings.from_env({"INFERY_ENVOY_TRACES_ENDPOINT": "off"}).listener().traces_endpoint == ""
    with pytest.raises(ValueError, match="INFERY_ENVOY_TRACES_ENDPOINT"):
        Settings.from_env({"INFERY_ENVOY_TRACES_ENDPOINT": "http://:4317"})
