"""ext_proc's header decisions (ext_proc/header_policy.py), without Envoy.

End to end, through Envoy and the three provider formats: tests/e2e/test_header_policy.py
(whose module name this one may not share: pytest imports test files by their basename).
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from infery_proto.wire import CHAIN_ROUTE, MODEL_ROUTE_HEADER, ROUTE_HEADER

from ext_proc import header_policy as policy


def _headers(*names: str) -> ep.HttpHeaders:
    return ep.HttpHeaders(
        headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=n, raw_value=b"v") for n in names])
    )


def test_the_client_cannot_steer_envoy_and_keeps_the_rest_for_the_allow_list():
    request = _headers(":path", ":method", "authorization", ROUTE_HEADER, "x-envoy-max-retries", "cookie")
    assert policy.names(request) == ("authorization", ROUTE_HEADER, "x-envoy-max-retries", "cookie")
    assert policy.read_client(request)[1] == ("authorization", "cookie")
    assert {ROUTE_HEADER, MODEL_ROUTE_HEADER, "x-envoy-retry-on"} <= set(policy.CONTROL)


def test_what_the_gateway_reads_of_the_client_is_envoys_raw_value_of_the_wanted_headers():
    request = ep.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[
                base_pb2.HeaderValue(key=":path", raw_value=b"/v1/chat/completions"),
                base_pb2.HeaderValue(key="authorization", raw_value=b"Bearer \xe9"),  # latin-1, as Envoy
                base_pb2.HeaderValue(key="x-api-key", value="plain"),  # an old Envoy's value field
                base_pb2.HeaderValue(key="cookie", raw_value=b"c"),
                base_pb2.HeaderValue(key=ROUTE_HEADER, raw_value=b"steer"),
            ]
        )
    )
    read, kept = policy.read_client(request)
    assert read == {":path": "/v1/chat/completions", "authorization": "Bearer \xe9", "x-api-key": "plain"}
    assert kept == ("authorization", "x-api-key", "cookie")


def test_every_router_header_the_gateway_sets_is_one_a_client_cannot():
    every = policy.router_headers(["5xx", "429", "timeout", "connect_failure"], 2, 1.5, 20, chain=True)
    assert {name for name, _ in every} <= set(policy.CONTROL)


def test_a_chains_router_headers_take_the_chain_route_with_its_retries_and_timeouts():
    headers = policy.router_headers(
        ["5xx", "429", "reset", "timeout", "connect_failure"], 2, 1.5, 20.25, True
    )
    assert dict(headers) == {
        MODEL_ROUTE_HEADER: CHAIN_ROUTE,
        "x-envoy-retry-on": "5xx,connect-failure,reset,retriable-status-codes",
        "x-envoy-max-retries": "2",  # one per fallback: Envoy's priorities walk the chain once
        "x-envoy-retriable-status-codes": "429",
        "x-envoy-upstream-rq-per-try-timeout-ms": "1500",
        "x-envoy-upstream-rq-timeout-ms": "20250",
    }
    # 429 not a trigger: no status code; no timeouts configured: Envoy's route's own (the gateway's).
    assert dict(policy.router_headers(["5xx"], 1, 0, 0, True)) == {
        MODEL_ROUTE_HEADER: CHAIN_ROUTE,
        "x-envoy-retry-on": "5xx",
        "x-envoy-max-retries": "1",
    }


def test_no_retries_without_a_trigger_or_a_fallback():
    # Envoy's chain route retries nothing itself (num_retries 0, no retry_on): no header, no retry.
    assert policy.router_headers([], 2, 0, 0, True) == ((MODEL_ROUTE_HEADER, CHAIN_ROUTE),)
    assert policy.router_headers(["5xx"], 0, 0, 0, True) == ((MODEL_ROUTE_HEADER, CHAIN_ROUTE),)


def test_a_model_without_a_chain_gets_its_timeouts_on_the_default_route():
    assert policy.router_headers(["5xx"], 0, 2, 30, chain=False) == (
        ("x-envoy-upstream-rq-per-try-timeout-ms", "2000"),
        ("x-envoy-upstream-rq-timeout-ms", "30000"),
    )


def test_a_provider_gets_only_its_allow_list_and_what_the_gateway_sets():
    present = [
        "authorization",  # the client's inf_ key: never forwarded
        "openai-organization",
        "x-goog-user-project",
        "cookie",
        "anthropic-beta",
        "user-agent",
        "content-type",
        "x-request-id",
        "x-api-key",  # set again by this attempt's translator: not removed, overwritten
    ]
    setting = {"x-api-key", ":path"}
    openai = policy.request_removals("openai", present, setting)
    assert openai == [
        "authorization",
        "openai-organization",
        "x-goog-user-project",
        "cookie",
        "anthropic-beta",
    ]
    anthropic = policy.request_removals("anthropic", present, setting)
    assert "anthropic-beta" not in anthropic and "openai-organization" in anthropic
    assert policy.request_allowed("openai_compatible") == policy.request_allowed("google")


def test_the_client_gets_the_content_headers_and_the_gateways_own():
    provider = _headers(
        ":status", "content-type", "openai-organization", "set-cookie", "x-ratelimit-limit-requests"
    )
    removed = policy.response_removals(provider, [("x-ratelimit-limit-requests", "100")])
    assert removed == [
        "openai-organization",
        "set-cookie",
    ]  # the gateway's own rate headers replace the provider's
