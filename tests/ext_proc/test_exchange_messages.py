"""The listener exchange on Anthropic's paths, without Envoy: keys in ``x-api-key``, every answer the
gateway writes in Anthropic's shapes (its refusals, Envoy's local replies, the end of a stream with
``credits_used`` on ``message_stop`` and no ``[DONE]``), and a count the gateway answers itself.

End-to-end behaviour, with the real anthropic SDK through a real Envoy, is tests/e2e/test_messages.py.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from infery_proto.v1 import config_pb2, usage_pb2
from infery_proto.wire import CHAIN_ROUTE, LOCAL_REPLY_HEADER, MODEL_ROUTE_HEADER, ROUTE_HEADER

from ext_proc import config
from ext_proc.errors import envelope as envelope_of
from ext_proc.exchange import Exchange, Services
from ext_proc.idempotency import Idempotency
from ext_proc.limits import Limiter
from ext_proc.shared_state import MemoryState
from tests.conformance import providers

KEY = "inf_messages-key"
BODY = {"model": "gpt", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


def _config() -> config.GatewayConfig:
    prices = config_pb2.Prices(input_per_mtok="1", output_per_mtok="2")
    return config.build(
        [
            config_pb2.Provider(
                name="o", kind="openai", cluster="provider_o", base_path="/v1", host="h", api_key="sk-o"
            ),
            config_pb2.Provider(
                name="a", kind="anthropic", cluster="provider_a", base_path="", host="h", api_key="sk-a"
            ),
        ],
        [
            config_pb2.Model(slug="gpt", provider="o", upstream_model="gpt-4o", prices=prices),
            config_pb2.Model(slug="claude", provider="a", upstream_model="claude-x", prices=prices),
            config_pb2.Model(slug="sonnet", provider="a", upstream_model="claude-x", prices=prices),
        ],
        [config_pb2.Workspace(id="w", name="w", price_multiplier="1")],
        [
            config_pb2.ApiKey(
                id="k", key_hash=hashlib.sha256(KEY.encode()).hexdigest(), workspace_id="w", member_id="m"
            )
        ],
        [config_pb2.Route(slug="claude", fallbacks=["gpt"], retry_on=["5xx"], cluster="chain_claude")],
        [config_pb2.DataPlaneSecret(name="d", attempt_grant_key=b"g" * 32)],
    )


def _headers(pairs: dict[str, str], end: bool = False) -> ep.HttpHeaders:
    return ep.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]
        ),
        end_of_stream=end,
    )


@pytest.fixture
def records() -> list[usage_pb2.UsageRecord]:
    return []


def _exchange(records: list[usage_pb2.UsageRecord]) -> Exchange:
    state = MemoryState(prefix="t")
    return Exchange(_config(), Services(records.append, Limiter(state), Idempotency(state)))


def _request(path: str = "/v1/messages", **headers: str) -> ep.HttpHeaders:
    return _headers({":path": path, ":method": "POST", "content-type": "application/json", **headers})


def _anthropic_error(reply: ep.ProcessingResponse, status: int, code: str) -> dict[str, Any]:
    immediate = reply.immediate_response
    assert immediate.status.code == status
    problems = providers().response("anthropic-response", immediate.body)
    assert not problems, problems
    doc: dict[str, Any] = orjson.loads(immediate.body)
    assert doc["type"] == "error" and doc["error"]["code"] == code
    return doc


def _set(reply: Any) -> dict[str, str]:
    return {h.header.key: h.header.raw_value.decode() for h in reply.response.header_mutation.set_headers}


@pytest.mark.parametrize(
    ("headers", "admitted"),
    [
        ({"x-api-key": KEY}, True),
        ({"authorization": f"Bearer {KEY}"}, True),
        ({"authorization": f"Bearer {KEY}", "x-api-key": "inf_other"}, True),  # the bearer token decides
        ({"authorization": "Basic xyz", "x-api-key": KEY}, True),
        ({"x-api-key": "inf_unknown"}, False),
        ({"authorization": "Bearer inf_unknown", "x-api-key": KEY}, False),
        ({}, False),
    ],
)
def test_a_key_in_x_api_key_or_as_a_bearer_token(records, headers: dict[str, str], admitted: bool) -> None:
    reply = _exchange(records).on_request_headers(_request(**headers))
    if admitted:
        assert reply.HasField("request_headers")
    else:
        doc = _anthropic_error(reply, 401, "invalid_api_key")
        assert doc["error"]["type"] == "authentication_error"


def test_a_chat_path_refuses_in_openais_envelope(records) -> None:
    reply = _exchange(records).on_request_headers(_request("/v1/chat/completions"))
    doc = orjson.loads(reply.immediate_response.body)
    assert doc["error"]["code"] == "invalid_api_key" and doc["error"]["type"] == "invalid_request_error"


async def test_the_gateways_refusals_are_in_anthropics_shape(records) -> None:
    exchange = _exchange(records)
    exchange.on_request_headers(_request(**{"x-api-key": KEY}))
    reply = await exchange.on_request_body(
        ep.HttpBody(body=orjson.dumps({**BODY, "max_tokens": 0}), end_of_stream=True)
    )
    doc = _anthropic_error(reply, 400, "invalid_value")
    assert doc["error"]["message"].startswith("max_tokens: ")
    exchange = _exchange(records)
    exchange.on_request_headers(_request(**{"x-api-key": KEY}))
    reply = await exchange.on_request_body(
        ep.HttpBody(body=orjson.dumps({**BODY, "model": "nope"}), end_of_stream=True)
    )
    assert _anthropic_error(reply, 404, "model_not_found")["error"]["type"] == "not_found_error"
    assert [r.error_code for r in records] == ["invalid_value", "model_not_found"]


async def test_a_count_on_a_provider_that_cannot_count_is_the_gateways_estimate(records) -> None:
    exchange = _exchange(records)
    exchange.on_request_headers(_request("/v1/messages/count_tokens", **{"x-api-key": KEY}))
    body = {"model": "gpt", "messages": [{"role": "user", "content": "x" * 40}]}
    reply = await exchange.on_request_body(ep.HttpBody(body=orjson.dumps(body), end_of_stream=True))
    immediate = reply.immediate_response  # no upstream call
    assert immediate.status.code == 200
    assert orjson.loads(immediate.body) == {"input_tokens": 14, "estimated": True}
    headers = {h.header.key: h.header.raw_value.decode() for h in immediate.headers.set_headers}
    assert headers["x-credits-used"] == "0" and headers["x-model-used"] == "gpt"
    (record,) = records
    assert (record.endpoint, record.status, record.credits, record.model_used) == (
        "/v1/messages/count_tokens",
        200,
        "0",
        "gpt",
    )


async def test_a_count_asks_the_models_own_provider_never_its_chain(records) -> None:
    exchange = _exchange(records)
    exchange.on_request_headers(_request("/v1/messages/count_tokens", **{"x-api-key": KEY}))
    body = {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}
    reply = await exchange.on_request_body(ep.HttpBody(body=orjson.dumps(body), end_of_stream=True))
    headers = _set(reply.request_body)
    assert headers[ROUTE_HEADER] == "provider_a" and headers[":path"] == "/v1/messages/count_tokens"
    # ...while a message on the chained model goes to its chain.
    exchange = _exchange(records)
    exchange.on_request_headers(_request(**{"x-api-key": KEY}))
    reply = await exchange.on_request_body(
        ep.HttpBody(body=orjson.dumps({**BODY, "model": "claude"}), end_of_stream=True)
    )
    assert _set(reply.request_body)[ROUTE_HEADER] == "chain_claude"


async def test_a_chains_request_carries_its_routers_headers_and_the_client_sent_none(records) -> None:
    """The chain's retries and timeouts go to Envoy with the request, on its chain route; the
    headers phase removed every router header the client sent (Envoy strips them already)."""
    exchange = _exchange(records)
    sent = {"x-api-key": KEY, "x-envoy-max-retries": "50", "x-envoy-upstream-rq-timeout-ms": "1"}
    removed = exchange.on_request_headers(_request(**sent)).request_headers.response.header_mutation
    assert {"x-envoy-max-retries", "x-envoy-upstream-rq-timeout-ms", MODEL_ROUTE_HEADER} <= set(
        removed.remove_headers
    )
    reply = await exchange.on_request_body(
        ep.HttpBody(body=orjson.dumps({**BODY, "model": "claude"}), end_of_stream=True)
    )
    headers = _set(reply.request_body)
    assert headers[ROUTE_HEADER] == "chain_claude" and headers[MODEL_ROUTE_HEADER] == CHAIN_ROUTE
    assert headers["x-envoy-max-retries"] == "1" and headers["x-envoy-retry-on"] == "5xx"


async def _streaming(records: list[usage_pb2.UsageRecord]) -> Exchange:
    exchange = _exchange(records)
    exchange.on_request_headers(_request(**{"x-api-key": KEY}))
    body = {**BODY, "model": "sonnet", "stream": True}
    reply = await exchange.on_request_body(ep.HttpBody(body=orjson.dumps(body), end_of_stream=True))
    sent = orjson.loads(reply.request_body.response.body_mutation.body)
    assert sent == {**body, "model": "claude-x"}
    await exchange.on_response_headers(_headers({":status": "200", "content-type": "text/event-stream"}))
    return exchange


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


START = _event(
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 1000, "output_tokens": 1},
        },
    },
)
TEXT = _event(
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
) + _event(
    "content_block_delta",
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello there"}},
)
END = (
    _event("content_block_stop", {"type": "content_block_stop", "index": 0})
    + _event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 500},
        },
    )
    + _event("message_stop", {"type": "message_stop"})
)


async def test_a_stream_ends_with_message_stop_carrying_the_credits(records) -> None:
    exchange = await _streaming(records)
    first = await exchange.on_response_body(ep.HttpBody(body=START + TEXT))
    last = await exchange.on_response_body(ep.HttpBody(body=END, end_of_stream=True))
    out = first.response_body.response.body_mutation.body + last.response_body.response.body_mutation.body
    assert not providers().response("anthropic-sse", out), out
    assert b"[DONE]" not in out
    assert out.endswith(b'event: message_stop\ndata: {"type":"message_stop","credits_used":0.002}\n\n')
    assert b'"model":"sonnet"' in out and b"claude-x" not in out
    (record,) = records
    assert (record.credits, record.input_tokens, record.output_tokens, record.error_code) == (
        "0.002",
        1000,
        500,
        "",
    )


async def test_a_stream_ending_early_ends_with_anthropics_error_event(records) -> None:
    exchange = await _streaming(records)
    reply = await exchange.on_response_body(ep.HttpBody(body=START + TEXT, end_of_stream=True))
    out = reply.response_body.response.body_mutation.body
    assert not providers().response("anthropic-sse", out), out
    name, data = out.rsplit(b"\n\n", 2)[-2].split(b"\n")
    assert name == b"event: error"
    error = orjson.loads(data.removeprefix(b"data: "))
    assert error["error"] == {
        "type": "api_error",
        "code": "upstream_error",
        "message": "The provider ended the stream early.",
    }
    # What was served is charged: the provider's 1000 input tokens, and "Hello there" (3 tokens) out.
    assert error["credits_used"] == 0.001006 and records[0].credits == "0.001006"
    assert records[0].usage_estimated and records[0].error_code == "upstream_error"


async def test_envoys_own_reply_is_restyled_in_anthropics_shape(records) -> None:
    exchange = _exchange(records)
    exchange.on_request_headers(_request(**{"x-api-key": KEY}))
    await exchange.on_request_body(
        ep.HttpBody(body=orjson.dumps({**BODY, "model": "sonnet"}), end_of_stream=True)
    )
    await exchange.on_response_headers(_headers({":status": "504", LOCAL_REPLY_HEADER: "upstream_timeout"}))
    envelope = envelope_of(504, "upstream_timeout", "The provider did not answer in time.")
    reply = await exchange.on_response_body(ep.HttpBody(body=envelope, end_of_stream=True))
    body = reply.response_body.response.body_mutation.body
    assert orjson.loads(body) == {
        "type": "error",
        "error": {
            "type": "timeout_error",
            "code": "upstream_timeout",
            "message": "The provider did not answer in time.",
        },
    }
    assert _set(reply.response_body)["content-length"] == str(len(body))
    assert records[0].error_code == "upstream_timeout"


@pytest.mark.parametrize(
    ("model", "credential", "kept"),
    [("sonnet", ("x-api-key", "sk-a"), {"anthropic-beta"}), ("gpt", ("authorization", "Bearer sk-o"), set())],
)
async def test_the_clients_key_never_reaches_a_provider(
    records, model: str, credential: tuple[str, str], kept: set[str]
) -> None:
    """Attack: an inf_ key in x-api-key (or as a bearer token) is replaced or removed, and so is every
    account-selecting header of Anthropic's; only the provider's own key goes upstream."""
    client = {
        "x-api-key": KEY,
        "authorization": f"Bearer {KEY}",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "output-128k-2025-02-19",
        "anthropic-workspace-id": "wrkspc_someone_elses",
        "anthropic-user-profile-id": "prof_1",
    }
    exchange = _exchange(records)
    exchange.on_request_headers(_request(**client))
    reply = await exchange.on_request_body(
        ep.HttpBody(body=orjson.dumps({**BODY, "model": model}), end_of_stream=True)
    )
    mutation = reply.request_body.response.header_mutation
    set_ = {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}
    removed = set(mutation.remove_headers)
    name, value = credential
    assert set_[name] == value
    assert KEY not in "".join(set_.values())
    for header in client:
        assert (
            header in kept
            or header in removed
            or (header in set_ and set_[header] != client[header])
            or (header == "anthropic-version" and set_.get(header) == "2023-06-01")
        ), header
    assert not (kept & removed)


def test_no_allow_list_names_a_client_credential() -> None:
    from ext_proc import header_policy
    from ext_proc.translators import WIRE_FORMATS

    for kind in WIRE_FORMATS:
        allowed = header_policy.request_allowed(kind)
        assert not allowed & {
            "authorization",
            "x-api-key",
            "anthropic-workspace-id",
            "anthropic-user-profile-id",
        }
