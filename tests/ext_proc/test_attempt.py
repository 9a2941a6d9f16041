"""An upstream attempt, without Envoy: it acts only on a grant, and only for targets the workspace may use."""

from __future__ import annotations

import time

import orjson
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import struct_pb2, text_format
from infery_proto.v1 import config_pb2

from ext_proc import config
from ext_proc.attempt import AttemptExchange
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
