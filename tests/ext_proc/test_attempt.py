"""An upstream attempt, without Envoy: it acts only on a grant, and only for targets the workspace may use."""

from __future__ import annotations

import time

import orjson
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import struct_pb2, text_format
from infery_proto.v1 import config_pb2
from infery_proto.wire import LOCAL_REPLY_HEADER

from ext_proc import config
from ext_proc.attempt import AttemptExchange, is_attempt, target_slug
from ext_proc.attempt_grant import Grant, sign
from ext_proc.media_fetch import MediaPolicy

GRANT_KEY = b"g" * 32


def _config(allowed: list[str]) -> config.GatewayConfig:
    return config.build(
        [config_pb2.Provider(name="a", kind="anthropic", cluster="c", host="h", api_key="sk-provider")],
        [config_pb2.Model(slug="claude", provider="a", upstream_model="claude-up")],
        [config_pb2.Workspace(id="w", name="w", price_multiplier="1", allowed_models=allowed)],
        [],
        [],
        [config_pb2.DataPlaneSecret(name="d", attempt_grant_key=GRANT_KEY)],
    )


def _first(grant: str) -> ep.ProcessingRequest:
    metadata = base_pb2.Metadata()
    metadata.filter_metadata["infery.target"].update({"model": "claude"})
    attrs = struct_pb2.Struct()
    attrs.update({"xds.upstream_host_metadata": text_format.MessageToString(metadata)})
    first = ep.ProcessingRequest()
    first.attributes["envoy.filters.http.ext_proc"].CopyFrom(attrs)
    first.metadata_context.filter_metadata["infery.attempt"].update(
        {"grant": grant, "endpoint": "/v1/chat/completions"}
    )
    first.request_headers.headers.headers.add(key="cookie", raw_value=b"c=1")
    return first


def _body() -> ep.HttpBody:
    return ep.HttpBody(body=orjson.dumps({"model": "x", "messages": [{"role": "user", "content": "hi"}]}))


def _grant(expires_in: float = 60) -> str:
    return sign(GRANT_KEY, Grant("r1", "w", "m1"), int(time.time() + expires_in))


async def test_a_granted_attempt_for_an_allowed_target_gets_its_provider_request():
    first = _first(_grant())
    attempt = AttemptExchange(_config(["claude"]), MediaPolicy(), first)
    assert attempt.on_request_headers(first.request_headers).WhichOneof("response") == "request_headers"
    reply = await attempt.on_request_body(_body())
    mutation = reply.request_body.response.header_mutation
    assert ("x-api-key", b"sk-provider") in [(h.header.key, h.header.raw_value) for h in mutation.set_headers]
    assert "cookie" in mutation.remove_headers


@pytest.mark.parametrize(
    ("allowed", "expires_in", "code"),
    [
        (["other"], 60, b"model_not_allowed"),  # the workspace may not use this target
        (["claude"], -10, b"attempt_not_authorized"),  # expired
    ],
)
async def test_no_provider_request_without_a_valid_grant_for_an_allowed_target(allowed, expires_in, code):
    first = _first(_grant(expires_in))
    attempt = AttemptExchange(_config(allowed), MediaPolicy(), first)
    reply = attempt.on_request_headers(first.request_headers)
    assert reply.WhichOneof("response") == "immediate_response"
    assert reply.immediate_response.status.code == 403 and code in reply.immediate_response.body
    assert b"sk-provider" not in reply.SerializeToString()
    later = await attempt.on_request_body(_body())
    assert b"sk-provider" not in later.SerializeToString()


def _headers_of(reply: ep.ProcessingResponse) -> dict[str, bytes]:
    return {h.header.key: h.header.raw_value for h in reply.immediate_response.headers.set_headers}


def test_an_attempt_is_told_apart_and_its_target_read_from_the_host_metadata():
    first = _first(_grant())
    assert is_attempt(first) and target_slug(first.attributes) == "claude"
    listener = ep.ProcessingRequest()
    listener.request_headers.headers.headers.add(key=":path", raw_value=b"/v1/chat/completions")
    assert not is_attempt(listener) and target_slug(listener.attributes) == ""


async def test_the_provider_request_keeps_only_what_the_providers_allow_list_names():
    first = _first(_grant())
    headers = first.request_headers.headers.headers
    for key, value in (
        ("anthropic-beta", b"tools"),
        ("openai-organization", b"org-x"),
        ("user-agent", b"sdk"),
    ):
        headers.add(key=key, raw_value=value)
    attempt = AttemptExchange(_config(["claude"]), MediaPolicy(), first)
    attempt.on_request_headers(first.request_headers)
    reply = await attempt.on_request_body(_body())
    common = reply.request_body.response
    assert set(common.header_mutation.remove_headers) == {"cookie", "openai-organization"}
    assert not common.clear_route_cache  # Envoy's router picked the target already
    sent = orjson.loads(common.body_mutation.body)
    assert sent["model"] == "claude-up"  # translated for the target's own provider (Anthropic)
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


async def test_a_stream_whose_first_message_is_not_the_headers_is_refused():
    first = _first(_grant())
    attempt = AttemptExchange(_config(["claude"]), MediaPolicy(), first)
    reply = await attempt.on_request_body(_body())  # never checked: refused
    assert reply.immediate_response.status.code == 403
    assert b"attempt_not_authorized" in reply.immediate_response.body
    assert b"sk-provider" not in reply.SerializeToString()


@pytest.mark.parametrize(
    ("endpoint", "models", "status", "code"),
    [
        ("/nope", ["claude"], 500, "internal_error"),  # an endpoint the gateway does not know
        ("/v1/embeddings", ["claude"], 400, "unsupported_endpoint"),  # the provider has no such API
    ],
)
async def test_what_cannot_be_sent_is_the_gateways_own_reply(endpoint, models, status, code):
    first = _first(_grant())
    first.metadata_context.filter_metadata["infery.attempt"].update({"endpoint": endpoint})
    attempt = AttemptExchange(_config(models), MediaPolicy(), first)
    headers_reply = attempt.on_request_headers(first.request_headers)
    reply = (
        headers_reply
        if headers_reply.HasField("immediate_response")
        else await attempt.on_request_body(_body())
    )
    assert reply.immediate_response.status.code == status
    assert orjson.loads(reply.immediate_response.body)["error"]["code"] == code
    assert _headers_of(reply)[LOCAL_REPLY_HEADER] == code.encode()  # the listener passes it on


async def test_a_target_the_gateway_does_not_serve_is_unavailable():
    first = _first(_grant())
    cfg = _config(["claude"])
    attempt = AttemptExchange(cfg, MediaPolicy(), first)
    attempt.on_request_headers(first.request_headers)
    del cfg.models["claude"]  # removed by a configuration change between the phases
    reply = await attempt.on_request_body(_body())
    assert reply.immediate_response.status.code == 503
    assert _headers_of(reply)[LOCAL_REPLY_HEADER] == b"upstream_unavailable"


async def test_the_other_phases_pass_and_an_internal_error_is_the_gateways_own_reply():
    first = _first(_grant())
    attempt = AttemptExchange(_config(["claude"]), MediaPolicy(), first)
    attempt.on_request_headers(first.request_headers)
    assert attempt.request_id == "r1"
    headers = await attempt.on_response_headers(ep.HttpHeaders())
    assert headers.WhichOneof("response") == "response_headers"
    body = await attempt.on_response_body(ep.HttpBody(body=b"x"))
    assert body.WhichOneof("response") == "response_body" and not body.response_body.HasField("response")
    reply = attempt.internal_error()
    assert reply.immediate_response.status.code == 500
    assert _headers_of(reply)[LOCAL_REPLY_HEADER] == b"internal_error"
    attempt.abort()  # nothing to settle: the listener records the request
