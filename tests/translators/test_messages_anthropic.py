"""Anthropic Messages ⇄ Anthropic: the body passes with the provider's model and key, answers and
streams come back as Anthropic sent them but for the slug that served, with usage read, the
last event held for credits, and errors in the gateway's codes and wording (Anthropic's shape)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from ext_proc.translators.base import ResponseContext, Target, Usage
from ext_proc.translators.count_tokens_anthropic import CountTokensAnthropic
from ext_proc.translators.messages_anthropic import MessagesAnthropic
from tests.translators._support import (
    anthropic_events,
    assert_anthropic_message,
    assert_anthropic_request,
    assert_provider_sse,
    each_split,
    final_message,
    messages_replay,
    own_fixture,
    shared_fixture,
)

PAIR = MessagesAnthropic()
SLUG = "claude"
UPSTREAM = "claude-sonnet-4-5-20250929"
CTX = ResponseContext(SLUG, UPSTREAM, 1_760_000_000)
TARGET = Target("anthropic", "/api", "sk-ant-provider", UPSTREAM)
BODY: dict[str, Any] = {
    "model": SLUG,
    "max_tokens": 1024,
    "system": [{"type": "text", "text": "terse", "cache_control": {"type": "ephemeral"}}],
    "messages": [{"role": "user", "content": "Hello"}],
    "thinking": {"type": "enabled", "budget_tokens": 1024},
    "top_k": 5,
    "stream": True,
}


def test_the_body_passes_with_the_providers_model_and_key() -> None:
    upstream = PAIR.request(dict(BODY), TARGET)
    assert upstream.path == "/api/v1/messages"
    assert upstream.headers == {
        "x-api-key": "sk-ant-provider",
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
    }
    out = orjson.loads(upstream.body)
    assert out == {**BODY, "model": UPSTREAM}
    assert_anthropic_request(out)


def test_the_answer_names_the_slug_and_its_usage_is_read() -> None:
    raw = shared_fixture("anthropic_recorded_message.json")
    res = PAIR.response(200, raw, CTX)
    doc = assert_anthropic_message(res.body)
    provider = json.loads(raw)
    assert doc == {**provider, "model": SLUG}
    usage = provider["usage"]
    cached = usage.get("cache_read_input_tokens") or 0
    created = usage.get("cache_creation_input_tokens") or 0
    assert res.usage == Usage(usage["input_tokens"] + cached + created, cached, usage["output_tokens"])


def test_an_answer_already_named_by_the_slug_passes_byte_for_byte() -> None:
    raw = orjson.dumps({**json.loads(shared_fixture("anthropic_recorded_message.json")), "model": SLUG})
    assert PAIR.response(200, raw, CTX).body is raw


@pytest.mark.parametrize(
    ("status", "body", "client", "code", "kind", "message"),
    [
        (
            429,
            json.loads(shared_fixture("anthropic_recorded_error_429.json")),
            429,
            "rate_limit_exceeded",
            "rate_limit_error",
            None,
        ),
        (
            400,
            {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "max_tokens: 100000 > 64000"},
            },
            400,
            "invalid_value",
            "invalid_request_error",
            "max_tokens: 100000 > 64000",
        ),
        (
            401,
            {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}},
            502,
            "upstream_error",
            "api_error",
            None,
        ),
        (
            529,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            503,
            "upstream_unavailable",
            "overloaded_error",
            None,
        ),
        (502, b"<html>bad gateway</html>", 502, "upstream_error", "api_error", None),
        (200, b"not json", 502, "upstream_error", "api_error", None),
        (
            200,
            {"type": "error", "error": {"type": "api_error", "message": "boom"}},
            502,
            "upstream_error",
            "api_error",
            None,
        ),
    ],
)
def test_errors_have_the_gateways_code_in_anthropics_shape(
    status: int, body: Any, client: int, code: str, kind: str, message: str | None
) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    res = PAIR.response(status, raw, CTX)
    doc = assert_anthropic_message(res.body)
    assert (res.status, res.error_code, res.usage) == (client, code, None)
    assert doc["error"]["type"] == kind and doc["error"]["code"] == code
    if message is not None:
        assert doc["error"]["message"] == message
    else:  # the gateway's wording: nothing of the provider's account (its org id) reaches the client
        assert "5576611f" not in doc["error"]["message"]


@each_split
@pytest.mark.parametrize(
    "name",
    [
        "anthropic_recorded_stream.sse",
        "anthropic_sdk_basic_response.sse",
        "anthropic_sdk_tool_use_response.sse",
        "anthropic_sdk_refusal_response.sse",
    ],
)
def test_recorded_streams_pass_with_the_slug_and_their_usage(name: str, size: int | None) -> None:
    raw = shared_fixture(name)
    stream = PAIR.stream(CTX)
    out = messages_replay(stream, raw, size)
    assert stream.done and stream.error_code is None
    events = anthropic_events(out)
    provider = [e for e in anthropic_events(_normalized(raw))]
    assert [n for n, _ in events] == [n for n, _ in provider]
    assert events[0][1]["message"]["model"] == SLUG
    assert events[0][1]["message"]["id"] == stream.response_id == provider[0][1]["message"]["id"]
    assert events[1:-1] == provider[1:-1]  # every event between passes as the provider sent it
    assert events[-1][1]["credits_used"] == 0.25
    message = final_message(out)
    assert stream.usage is not None and stream.usage.output_tokens == message.usage.output_tokens


def _normalized(raw: bytes) -> bytes:
    """A recorded stream with JSON re-encoded (the recordings pad their JSON with spaces)."""
    out = []
    for block in raw.replace(b"\r\n", b"\n").strip().split(b"\n\n"):
        name, data = block.split(b"\n", 1)
        out.append(name + b"\ndata: " + orjson.dumps(json.loads(data[6:])) + b"\n\n")
    return b"".join(out)


@each_split
def test_an_error_event_ends_the_stream_with_the_gateways_code(size: int | None) -> None:
    stream = PAIR.stream(CTX)
    out = messages_replay(stream, own_fixture("anthropic_error_midstream.sse"), size)
    name, data = anthropic_events(out)[-1]
    assert name == "error" and stream.done and stream.error_code == "upstream_unavailable"
    assert data["error"] == {
        "type": "overloaded_error",
        "code": "upstream_unavailable",
        "message": "the provider answered overloaded_error",
    }


def test_a_stream_cut_short_is_not_done() -> None:
    stream = PAIR.stream(CTX)
    stream.feed(own_fixture("anthropic_truncated.sse"))
    stream.finish()
    assert not stream.done and stream.held is None and stream.error_code is None


def test_events_after_the_end_are_not_passed() -> None:
    raw = shared_fixture("anthropic_sdk_basic_response.sse")
    stream = PAIR.stream(CTX)
    stream.feed(raw + b"\n\n")  # the recording ends without its blank line
    assert stream.done
    assert stream.feed(b'event: ping\ndata: {"type":"ping"}\n\n') == b""


def test_own_fixtures_are_valid_provider_streams() -> None:
    assert_provider_sse("anthropic", own_fixture("anthropic_error_midstream.sse"))


# ------------------------------------------------------------------ count_tokens


def test_count_tokens_passes_through_and_costs_nothing() -> None:
    pair = CountTokensAnthropic()
    body = {"model": SLUG, "messages": [{"role": "user", "content": "Hello"}]}
    upstream = pair.request(dict(body), TARGET)
    assert upstream.path == "/api/v1/messages/count_tokens"
    assert orjson.loads(upstream.body) == {**body, "model": UPSTREAM}
    assert upstream.headers["x-api-key"] == "sk-ant-provider"
    res = pair.response(200, b'{"input_tokens":14}', CTX)
    assert (res.status, res.body, res.usage) == (200, b'{"input_tokens":14}', Usage())
    err = pair.response(404, b'{"type":"error","error":{"type":"not_found_error","message":"model: x"}}', CTX)
    assert assert_anthropic_message(err.body)["error"]["code"] == "model_not_found"
