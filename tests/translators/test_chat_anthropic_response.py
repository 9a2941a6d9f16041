"""Anthropic responses, streams and errors → OpenAI, on recorded and hand-made fixtures."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from ext_proc.translators.base import ResponseContext, TranslatedResponse, Usage
from ext_proc.translators.chat_anthropic import ChatAnthropic
from tests.translators._support import (
    OWN_FIXTURES,
    accumulate,
    as_body,
    assert_provider_sse,
    check_completed,
    check_failed,
    completion_of,
    each_split,
    error_of,
    first_event,
    own_fixture,
    replay,
    shared_fixture,
    sse_payloads,
    stream_events,
    usage_chunks,
    usage_doc,
)

CTX = ResponseContext("claude-sonnet-4-5", "claude-sonnet-4-5-20250929", 1_760_000_000)
CTX_USAGE = ResponseContext(
    "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", 1_760_000_000, include_usage=True
)


def text_deltas(raw: bytes) -> str:
    """The fixture's own text, read independently of the translator."""
    out = []
    for line in raw.decode().splitlines():
        if line.startswith("data: ") and '"text_delta"' in line:
            out.append(json.loads(line[6:])["delta"]["text"])
    return "".join(out)


# fixture, prompt, cached, completion, reasoning, finish, refusal, [(tool name, arguments)]
STREAMS: list[tuple[str, int, int, int, int, str, str, list[tuple[str, str]]]] = [
    ("anthropic_recorded_stream.sse", 135, 0, 10, 0, "stop", "", []),
    ("anthropic_sdk_basic_response.sse", 11, 0, 6, 0, "stop", "", []),
    ("anthropic_sdk_compaction_response.sse", 30, 0, 8, 0, "stop", "", []),
    ("anthropic_sdk_fable_stream-a-refusal.sse", 28, 0, 106, 67, "content_filter",
     "The model declined to answer this request.", []),
    # message_delta's cumulative usage (28) supersedes message_start's estimate (612)
    ("anthropic_sdk_fable_stream-a-toolrefusal.sse", 28, 0, 106, 67, "content_filter",
     "The model declined to answer this request.", []),
    ("anthropic_sdk_fable_stream-b-fallback.sse", 31, 0, 547, 0, "stop", "", []),
    ("anthropic_sdk_fallback_credit_response.sse", 25, 0, 8, 0, "stop", "", []),
    ("anthropic_sdk_fallback_response.sse", 25, 0, 8, 0, "stop", "", []),
    ("anthropic_sdk_incomplete_partial_json_response.sse", 450, 0, 124, 0, "length", "",
     [("make_file", '{"filename": "taxes.txt", "lines_of_text": [\n"# COMPREHENSIVE TAX GUIDE FOR '
      'INDIVIDUALS WITH MULTIPLE W-2s",\n"",\n"## INTRODUCTION",\n"",\n"Filing taxes')]),
    ("anthropic_sdk_refusal_response.sse", 20, 0, 0, 0, "content_filter",
     "This request was refused due to policy.", []),
    ("anthropic_sdk_tool_use_response.sse", 377, 0, 65, 0, "tool_calls", "",
     [("get_weather", '{"location": "Paris"}')]),
]  # fmt: skip


@each_split
@pytest.mark.parametrize(
    ("name", "prompt", "cached", "completion", "reasoning", "finish", "refusal", "tools"),
    STREAMS,
    ids=[s[0] for s in STREAMS],
)
def test_recorded_stream(
    name: str,
    prompt: int,
    cached: int,
    completion: int,
    reasoning: int,
    finish: str,
    refusal: str,
    tools: list[tuple[str, str]],
    size: int | None,
) -> None:
    raw = shared_fixture(name)
    stream = ChatAnthropic().stream(CTX_USAGE)
    events = stream_events(stream, raw, size)
    check_completed(stream, events, CTX_USAGE)
    assert stream.response_id == "chatcmpl-" + first_event(raw)["message"]["id"]

    (choice,) = accumulate(events).values()
    assert choice["content"] == text_deltas(raw)
    assert choice["refusal"] == refusal
    assert choice["finish"] == finish
    assert [(t["name"], t["arguments"]) for t in choice["tools"].values()] == tools
    assert all(t["id"].startswith("toolu_") for t in choice["tools"].values())

    assert stream.usage == Usage(prompt, cached, completion, reasoning)
    assert events[-1]["choices"] == []
    assert usage_chunks(events) == [usage_doc(prompt, cached, completion, reasoning)]


def test_usage_chunk_only_when_asked() -> None:
    raw = shared_fixture("anthropic_sdk_basic_response.sse")
    stream = ChatAnthropic().stream(CTX)
    events = stream_events(stream, raw, None)
    assert usage_chunks(events) == []
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert stream.usage == Usage(11, 0, 6, 0)


def test_recorded_exchange_with_429s() -> None:
    """The SDK's recorded exchange: two 429s, then a stream."""
    exchange = json.loads(shared_fixture("anthropic_sdk_recorded_exchange_stream_with_429.json"))
    translator = ChatAnthropic()
    for attempt in exchange[:2]:
        res = translator.response(
            attempt["response"]["status_code"], orjson.dumps(attempt["response"]["body"]), CTX
        )
        error_of(res, 429, "rate_limit_exceeded", None)
    stream = translator.stream(CTX_USAGE)
    events = stream_events(stream, exchange[2]["response"]["body"].encode(), 7)
    (choice,) = accumulate(events).values()
    assert choice["content"] == "[12345,67890]"
    assert stream.usage == Usage(135, 0, 10, 0)


@pytest.mark.parametrize(
    "name",
    ["anthropic_recorded_message.json", "anthropic_sdk_recorded_exchange_parse.json"],
)
def test_recorded_message(name: str) -> None:
    doc = json.loads(shared_fixture(name))
    body = doc[0]["response"]["body"] if isinstance(doc, list) else doc
    res = ChatAnthropic().response(200, orjson.dumps(body), CTX)
    out = completion_of(res, CTX)
    assert out["id"] == "chatcmpl-msg_01T4jd6NyD9xGGtTPDC4ogy5"
    assert out["choices"][0]["message"]["content"] == body["content"][0]["text"]
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["prompt_tokens"] == 406 and out["usage"]["completion_tokens"] == 50
    assert res.usage == Usage(406, 0, 50, 0)


def respond(name: str) -> TranslatedResponse:
    return ChatAnthropic().response(200, own_fixture(name), CTX)


def test_message_with_tool_calls_and_cache() -> None:
    res = respond("anthropic_message_tool_use.json")
    out = completion_of(res, CTX)
    message = out["choices"][0]["message"]
    assert message["content"] == "Checking both cities."
    assert [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in message["tool_calls"]
    ] == [
        ("toolu_01A", "get_weather", {"city": "Paris", "days": 1}),
        ("toolu_01B", "get_weather", {"city": "Oslo", "days": 2}),
    ]
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["usage"] == usage_doc(150, 100, 80, 25)  # prompt = input + cache read + cache creation
    assert res.usage == Usage(150, 100, 80, 25)


def test_answer_tool_becomes_content() -> None:
    out = completion_of(respond("anthropic_message_answer_value.json"), CTX)
    message = out["choices"][0]["message"]
    assert json.loads(message["content"]) == [12345, 67890]
    assert "tool_calls" not in message
    assert out["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("name", "content", "refusal", "finish"),
    [
        (
            "anthropic_message_refusal.json",
            None,
            "The model declined to answer this request.",
            "content_filter",
        ),
        ("anthropic_message_max_tokens.json", "Once upon a", None, "length"),
    ],
)
def test_message_finish(name: str, content: str | None, refusal: str | None, finish: str) -> None:
    out = completion_of(respond(name), CTX)
    message = out["choices"][0]["message"]
    assert (message["content"], message["refusal"], out["choices"][0]["finish_reason"]) == (
        content,
        refusal,
        finish,
    )


@each_split
@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("anthropic_answer_tool_stream.sse", '{"city": "Paris", "temp": 21}'),
        ("anthropic_answer_value_stream.sse", "[12345,67890]"),
    ],
)
def test_answer_tool_stream(name: str, content: str, size: int | None) -> None:
    stream = ChatAnthropic().stream(CTX_USAGE)
    (choice,) = accumulate(stream_events(stream, own_fixture(name), size)).values()
    assert choice["content"] == content and json.loads(choice["content"])
    assert choice["tools"] == {}
    assert choice["finish"] == "stop"


def test_answer_tool_stream_counts_cache_reads() -> None:
    stream = ChatAnthropic().stream(CTX)
    replay(stream, own_fixture("anthropic_answer_tool_stream.sse"), None)
    assert stream.usage == Usage(92, 40, 17, 0)


@each_split
def test_error_inside_stream(size: int | None) -> None:
    stream = ChatAnthropic().stream(CTX_USAGE)
    events = stream_events(stream, own_fixture("anthropic_error_midstream.sse"), size)
    assert check_failed(stream, events, "upstream_unavailable")[0]["content"] == "Once upon"
    assert events[-1]["error"]["type"] == "server_error"


def test_truncated_stream_ends_with_an_error() -> None:
    stream = ChatAnthropic().stream(CTX_USAGE)
    out = stream.feed(own_fixture("anthropic_truncated.sse"))
    assert not stream.done
    events = sse_payloads(out + stream.finish() + b"data: " + (stream.held or b"") + b"\n\n")
    check_failed(stream, events, "upstream_error")  # the error is held as the last chunk
    assert stream.usage == Usage(9, 0, 1, 0)  # what was reported before the cut


def test_bytes_after_message_stop_are_ignored() -> None:
    stream = ChatAnthropic().stream(CTX)
    first = stream.feed(shared_fixture("anthropic_sdk_basic_response.sse") + b"\n\n")
    assert stream.done
    assert stream.feed(b'event: content_block_delta\ndata: {"type":"content_block_delta"}\n\n') == b""
    assert stream.finish() == b""
    assert first.endswith(b"\n\n")


def test_own_fixtures_are_valid_provider_streams() -> None:
    for path in sorted(OWN_FIXTURES.glob("anthropic_*.sse")):
        if "truncated" not in path.name:
            assert_provider_sse("anthropic", path.read_bytes())


def anthropic_error(kind: str, message: str = "boom") -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


# status, provider body, client status, code, message (None: the gateway's own wording)
ERRORS: list[tuple[int, Any, int, str, str | None]] = [
    # A field Anthropic blames is the OpenAI parameter behind it (issue 12 item 4).
    (400, anthropic_error("invalid_request_error", "max_tokens: too big"), 400, "invalid_value",
     "max_tokens: too big"),
    (400, anthropic_error("invalid_request_error", "something is off"), 400, "invalid_request",
     "something is off"),
    (401, anthropic_error("authentication_error", "invalid x-api-key"), 502, "upstream_error", None),
    (403, anthropic_error("permission_error"), 502, "upstream_error", None),
    (404, anthropic_error("not_found_error", "model: claude-x"), 404, "model_not_found", "model: claude-x"),
    (413, anthropic_error("request_too_large", "too large"), 413, "request_too_large", "too large"),
    (429, json.loads(shared_fixture("anthropic_recorded_error_429.json")), 429, "rate_limit_exceeded", None),
    (500, anthropic_error("api_error"), 502, "upstream_error", None),
    (529, anthropic_error("overloaded_error"), 503, "upstream_unavailable", None),
    (504, anthropic_error("timeout_error"), 504, "upstream_timeout", None),
    (503, b"<html>upstream connect error</html>", 503, "upstream_unavailable", None),
    (502, b"", 502, "upstream_error", None),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "client_status", "code", "message"), ERRORS)
def test_errors(status: int, body: Any, client_status: int, code: str, message: str | None) -> None:
    res = ChatAnthropic().response(status, as_body(body), CTX)
    out = error_of(res, client_status, code, message)
    assert "org:" not in out["error"]["message"]  # provider account details stay private


def test_unreadable_success_body() -> None:
    res = ChatAnthropic().response(200, b"not json", CTX)
    assert (res.status, res.error_code) == (502, "upstream_error")
