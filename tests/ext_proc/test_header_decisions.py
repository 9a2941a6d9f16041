"""ext_proc's header decisions (ext_proc/header_policy.py), without Envoy.

End to end, through Envoy and the three provider formats: tests/e2e/test_header_policy.py
(whose module name this one may not share: pytest imports test files by their basename).
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from infery_proto.wire import MODEL_ROUTE_HEADER, ROUTE_HEADER

from ext_proc import header_policy as policy


def _headers(*names: str) -> ep.HttpHeaders:
    return ep.HttpHeaders(
        headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=n, raw_value=b"v") for n in names])
    )


def test_the_client_cannot_steer_envoy_and_keeps_the_rest_for_the_allow_list():
    request = _headers(":path", ":method", "authorization", ROUTE_HEADER, "x-envoy-max-retries", "cookie")
    assert policy.names(request) == ("authorization", ROUTE_HEADER, "x-envoy-max-retries", "cookie")
    assert policy.client_names(request) == ("authorization", "cookie")
    assert {ROUTE_HEADER, MODEL_ROUTE_HEADER, "x-envoy-retry-on"} <= set(policy.CONTROL)


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
