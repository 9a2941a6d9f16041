"""Metrics and probes of a whole gateway after a mixed run: values, not just names.

One run with a chat, a stream, a fallback, a rate-limit refusal and an idempotent
replay; then ext_proc's ``/metrics``, the control plane's ``/metrics`` and Envoy's
stats-only listener are scraped and checked against the usage records the same
requests produced.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infery.stack import Stack, grpc_serving
from simulators.testing import SimulatorProcess
from tests.e2e.support import (
    ADMIN_TOKEN,
    PRICES,
    SIM_KEY,
    Admin,
    Tenant,
    eventually,
    new_tenant,
    start_gateway,
)

PROMPT = "Say hello in a few words, " + secrets.token_hex(6)  # unique: a log scan must not find it
HI = [{"role": "user", "content": PROMPT}]
ONCE_PROMPT = "once, " + secrets.token_hex(6)
CHAT = "/v1/chat/completions"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> tuple[str, Samples]:
    response = httpx.get(url, timeout=5)
    assert response.status_code == 200, response.text
    values = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    return response.text, values


def total(values: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in values.items() if n == name and wanted <= ls)


@dataclass
class Run:
    stack: Stack
    admin: Admin
    tenants: list[Tenant]
    request_ids: list[str]
    records: list[dict[str, Any]]
    completions: list[str]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    with (
        SimulatorProcess("openai", api_key=SIM_KEY) as primary,
        SimulatorProcess("anthropic", api_key=SIM_KEY) as claude,
    ):
        stack = start_gateway(
            Path(tmp_path_factory.mktemp("observability")), INFERY_EJECT_AFTER_FAILURES="1000"
        )
        try:
            admin = Admin(stack.admin_url)
            admin.provider("openai", "openai", primary.base_url, SIM_KEY)
            admin.provider("anthropic", "anthropic", claude.base_url, SIM_KEY)
            admin.model("gpt-4o-mini", "openai", "gpt-4o-mini")
            admin.model("gpt-4o", "openai", "gpt-4o")
            admin.model(
                "claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5", {**PRICES, "output_per_mtok": "15"}
            )
            admin.call("PUT", "/routes/gpt-4o", {"fallbacks": ["claude-sonnet-4-5"], "retry_on": ["5xx"]})
            tenant = new_tenant(admin, stack, "observed")
            limited = new_tenant(admin, stack, "limited", rpm=1)
            ids: list[str] = []

            def post(who: Tenant, body: dict[str, Any], **headers: str) -> httpx.Response:
                response = httpx.post(
                    stack.base_url + "/chat/completions",
                    json=body,
                    headers={"authorization": f"Bearer {who.key}", **headers},
                    timeout=30,
                )
                ids.append(response.headers["x-request-id"])
                return response

            chat = post(tenant, {"model": "gpt-4o-mini", "messages": HI})
            assert chat.status_code == 200
            streamed = {"model": "gpt-4o-mini", "messages": HI, "stream": True}
            stream = post(tenant, {**streamed, "stream_options": {"include_usage": True}})
            assert stream.status_code == 200 and "data: [DONE]" in stream.text
            primary.script([{"status": 503}])
            fallback = post(tenant, {"model": "gpt-4o", "messages": HI})
            assert fallback.status_code == 200 and fallback.headers["x-fallback-from"] == "gpt-4o"
            assert post(limited, {"model": "gpt-4o-mini", "messages": HI}).status_code == 200
            refused = post(limited, {"model": "gpt-4o-mini", "messages": HI})
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
            once = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": ONCE_PROMPT}]}
            first = post(tenant, once, **{"idempotency-key": "observed-1"})
            replay = post(tenant, once, **{"idempotency-key": "observed-1"})
            assert first.status_code == replay.status_code == 200 and first.content == replay.content
            records: list[dict[str, Any]] = [
                eventually(lambda i=i: admin.usage_record(i), timeout=15)  # type: ignore[misc]
                for i in ids
            ]
            assert sum(1 for r in records if r["idempotent_replay"]) == 1
            completions = [r.json()["choices"][0]["message"]["content"] for r in (chat, fallback, first)]
            yield Run(stack, admin, [tenant, limited], ids, records, completions)
        finally:
            stack.stop()


def test_ext_proc_metrics_equal_the_usage_records(run: Run) -> None:
    (port,) = run.stack.ports.ext_proc
    text, values = scrape(run.stack.metrics_url(port))
    charged = [r for r in run.records if r["status"] < 400 and not r["idempotent_replay"]]
    for token_type, field in (("input", "input_tokens"), ("output", "output_tokens")):
        expected = sum(r[field] for r in charged)
        assert expected > 0
        assert total(values, "gen_ai_client_token_usage_sum", gen_ai_token_type=token_type) == expected
        assert total(values, "gen_ai_client_token_usage_count", gen_ai_token_type=token_type) == len(charged)
    # Requests by endpoint, status and error code: every metered request once.
    assert total(values, "infery_requests_total") == len(run.records)
    assert total(values, "infery_requests_total", endpoint=CHAT, status="200") == len(run.records) - 1
    assert (
        total(values, "infery_requests_total", endpoint=CHAT, status="429", error_code="rate_limit_exceeded")
        == 1
    )
    assert total(values, "infery_limit_refusals_total", reason="rate_limit") == 1
    assert total(values, "infery_limit_refusals_total", reason="budget") == 0
    assert total(values, "infery_idempotent_replays_total") == 1
    # One fallback, from the requested model to the one that answered.
    assert total(values, "infery_fallbacks_total") == 1
    assert total(values, "infery_fallbacks_total", from_model="gpt-4o", to_model="claude-sonnet-4-5") == 1
    # Credits: what the records say was charged.
    credits = sum(Decimal(r["credits"]) for r in run.records)
    assert abs(Decimal(str(total(values, "infery_credits_charged_total"))) - credits) < Decimal("1e-9")
    # Histograms with the GenAI labels.
    served_by_claude = {
        "gen_ai_operation_name": "chat",
        "gen_ai_request_model": "gpt-4o",
        "gen_ai_response_model": "claude-sonnet-4-5",
        "gen_ai_provider_name": "anthropic",
        "error_type": "",
    }
    assert total(values, "gen_ai_server_request_duration_seconds_count", **served_by_claude) == 1
    assert (
        total(
            values,
            "gen_ai_server_request_duration_seconds_count",
            gen_ai_request_model="gpt-4o-mini",
            error_type="rate_limit_exceeded",
        )
        == 1
    )
    stream = {
        "gen_ai_operation_name": "chat",
        "gen_ai_request_model": "gpt-4o-mini",
        "gen_ai_provider_name": "openai",
    }
    assert total(values, "gen_ai_server_time_to_first_token_seconds_count", **stream) == 1
    assert total(values, "gen_ai_server_time_per_output_token_seconds_count", **stream) == 1
    # ext_proc's own messages, xDS and the usage spool.
    assert total(values, "infery_ext_proc_messages_total", phase="request_headers") >= len(run.records)
    assert total(values, "infery_ext_proc_message_duration_seconds_count") > 0
    assert total(values, "infery_xds_updates_total") >= 1
    assert total(values, "infery_xds_last_update_timestamp_seconds") > 0
    assert total(values, "infery_usage_delivered_records_total") == len(run.records)
    assert total(values, "infery_usage_spool_pending_records") == 0
    assert total(values, "infery_usage_delivery_lag_seconds") == 0
    assert total(values, "infery_limiter_fail_open_total") == 0
    # Bounded labels: no workspace unless asked for; never a key, a member or a secret.
    assert "workspace=" not in text
    for tenant in run.tenants:
        assert tenant.key not in text and tenant.key_id not in text and tenant.member_id not in text
    assert SIM_KEY not in text


def test_control_plane_metrics_count_ingestion_publishes_and_admin_requests(run: Run) -> None:
    text, values = scrape(f"{run.stack.admin_url}/metrics")  # no token
    stored = total(values, "infery_usage_records_ingested_total", result="stored")
    assert stored == len(run.records)
    assert total(values, "infery_config_publishes_total") >= 1
    assert total(values, "infery_config_publish_duration_seconds_count") >= 1
    created_models = total(
        values, "infery_admin_requests_total", method="POST", route="/admin/v1/models", status="201"
    )
    assert created_models == 3
    for tenant in run.tenants:
        assert tenant.key not in text


def test_probes_answer(run: Run) -> None:
    assert httpx.get(f"{run.stack.admin_url}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"{run.stack.admin_url}/readyz", timeout=5).json()["status"] == "ok"
    (port,) = run.stack.ports.ext_proc
    assert grpc_serving(f"unix:{run.stack.ext_proc_socket(port)}")
    ready = httpx.get(f"{run.stack.envoy_stats_url}/ready", timeout=5)
    assert ready.status_code == 200 and ready.text.strip() == "LIVE"


def test_envoy_stats_listener_serves_only_stats_and_ready(run: Run) -> None:
    base = run.stack.envoy_stats_url
    stats = httpx.get(f"{base}/stats/prometheus", timeout=5)
    assert stats.status_code == 200 and "envoy_cluster_upstream_rq" in stats.text
    for path in (
        "/config_dump",
        "/stats",
        "/clusters",
        "/listeners",
        "/server_info",
        "/runtime",
        "/",
        "/ready/x",
    ):
        assert httpx.get(base + path, timeout=5).status_code == 404, path
    for path in ("/quitquitquit", "/healthcheck/fail", "/stats/prometheus", "/logging", "/reset_counters"):
        assert httpx.post(base + path, timeout=5).status_code == 404, path
    assert run.stack.processes["envoy"].alive()
    assert run.stack.envoy_admin("/ready").text.strip() == "LIVE"  # nothing above reached the admin


def json_lines(stack: Stack, process: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stack.processes[process].log().splitlines() if line[:1] == "{"]


def access_log(stack: Stack, request_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Envoy's access log lines by request id, once it holds ``request_ids`` (it flushes every second)."""

    def lines() -> dict[str, dict[str, Any]] | None:
        by_id = {line["request_id"]: line for line in json_lines(stack, "envoy") if "request_id" in line}
        return by_id if set(request_ids) <= set(by_id) else None

    return eventually(lines, timeout=15)


def test_ext_proc_logs_one_json_line_per_request(run: Run) -> None:
    (port,) = run.stack.ports.ext_proc

    def logged() -> dict[str, dict[str, Any]] | None:
        lines = json_lines(run.stack, f"ext_proc_{port}")
        by_id = {line["request_id"]: line for line in lines if line.get("logger") == "infery.requests"}
        return by_id if set(by_id) == set(run.request_ids) else None

    requests = eventually(logged)  # written off the event loop, in batches every 0.1 s
    refused = next(r for r in run.records if r["status"] == 429)
    line = requests[refused["request_id"]]
    assert line["level"] == "INFO" and line["status"] == 429 and line["error_code"] == "rate_limit_exceeded"
    assert line["workspace_id"] and line["model_requested"] == "gpt-4o-mini" and line["latency_ms"] > 0


def test_envoy_access_log_has_one_json_line_per_request_with_the_gateways_id(run: Run) -> None:
    lines = access_log(run.stack, run.request_ids)
    for request_id, record in zip(run.request_ids, run.records, strict=True):
        line = lines[request_id]  # the id the client saw in x-request-id and the usage record holds
        assert record["request_id"] == request_id
        # The path Envoy last had: the provider's (Anthropic's for the fallback), never a query string.
        path = "/v1/messages" if record["provider"] == "anthropic" else CHAT
        assert (line["method"], line["path"], line["status"]) == ("POST", path, record["status"])
        # The model that answered (x-model-used); a refused request has none.
        assert line["model"] == (record["model_used"] if record["status"] == 200 else None)
        assert isinstance(line["duration_ms"], int)
        assert line["bytes_received"] > 0 and line["bytes_sent"] > 0 and line["protocol"] == "HTTP/1.1"
    served = [r["request_id"] for r in run.records if r["status"] == 200 and not r["idempotent_replay"]]
    assert all(lines[i]["upstream_cluster"] and lines[i]["upstream_host"] for i in served)
    assert all(lines[i]["response_flags"] == "-" and lines[i]["details"] == "via_upstream" for i in served)
    refused = next(r for r in run.records if r["status"] == 429)
    assert lines[refused["request_id"]]["upstream_cluster"] is None  # answered by ext_proc itself


def test_envoy_access_log_keeps_no_credential_or_query_string(run: Run) -> None:
    """A key in the Authorization header (refused) and one a client put in the query string."""
    tenant = run.tenants[0]
    wrong = httpx.post(
        run.stack.base_url + "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": HI},
        headers={"authorization": f"Bearer {tenant.key}x"},
        timeout=30,
    )
    assert wrong.status_code == 401
    in_query = httpx.post(
        run.stack.base_url + f"/chat/completions?api_key={tenant.key}",
        json={"model": "gpt-4o-mini", "messages": HI},
        headers={"authorization": f"Bearer {tenant.key}"},
        timeout=30,
    )
    assert in_query.status_code == 200
    lines = access_log(run.stack, [wrong.headers["x-request-id"], in_query.headers["x-request-id"]])
    assert lines[wrong.headers["x-request-id"]]["status"] == 401
    assert lines[in_query.headers["x-request-id"]]["path"] == CHAT  # without ?api_key=...
    # The log scan below looks for the keys in every log, this access log included.


def test_control_plane_logs_one_json_line_per_admin_request(run: Run) -> None:
    lines = [
        line for line in json_lines(run.stack, "control_plane") if line["logger"] == "infery.admin_requests"
    ]
    models = [line for line in lines if line["route"] == "/admin/v1/models" and line["method"] == "POST"]
    assert [line["status"] for line in models] == [201, 201, 201]
    assert all(line["level"] == "INFO" and line["duration_ms"] > 0 and line["request_id"] for line in lines)
    assert len({line["request_id"] for line in lines}) == len(lines)
    keys = [line for line in lines if line["route"] == "/admin/v1/workspaces/{name}/keys"]
    assert {line["workspace"] for line in keys} == {t.workspace for t in run.tenants}
    assert not [line for line in lines if line["route"] in ("/metrics", "/healthz", "/readyz")]  # DEBUG only
    response = run.admin.http.get("/models")
    assert response.status_code == 200

    def logged() -> bool:
        ids = {line.get("request_id") for line in json_lines(run.stack, "control_plane")}
        return response.headers["x-request-id"] in ids

    assert eventually(logged)


def test_no_log_holds_a_key_a_prompt_or_a_completion(run: Run) -> None:
    """Every process's log of the whole run, scanned for every secret and text it saw.

    The three request logs are in them (Envoy's access log on its stdout, ext_proc's request
    lines, the control plane's admin request lines): each must hold this run's requests first,
    so that the scan cannot pass on a log not yet written.
    """
    assert all(len(c) >= 8 for c in run.completions), run.completions
    access_log(run.stack, run.request_ids)
    (port,) = run.stack.ports.ext_proc
    assert {line.get("request_id") for line in json_lines(run.stack, f"ext_proc_{port}")} >= set(
        run.request_ids
    )
    assert any(line["logger"] == "infery.admin_requests" for line in json_lines(run.stack, "control_plane"))
    secrets_used = [SIM_KEY, ADMIN_TOKEN, PROMPT, ONCE_PROMPT, *run.completions]
    for tenant in run.tenants:
        secrets_used += [tenant.key, tenant.key.removeprefix("inf_")]
    for name, process in run.stack.processes.items():
        text = process.log()
        assert text, name
        for secret in secrets_used:
            assert secret not in text, (name, secret[:12])
