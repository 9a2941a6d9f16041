"""Provider answers and streams → Responses API answers and event streams, through the chat pairs.

Recorded provider payloads (Anthropic's and Gemini's own, vendored) are replayed through each
pair, split into 1-byte, 7-byte and whole pieces. Every answer is checked against OpenAI's
``Response`` schema, every event against ``ResponseStreamEvent``, and both are read by the real
openai SDK (``responses.create``, and ``responses.stream`` with ``get_final_response``), over
an in-memory transport that serves the translated bytes.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import orjson
import pytest

from ext_proc.endpoints.responses import ENDPOINT
from ext_proc.translators.base import ResponseContext, StreamTranslator, Usage
from ext_proc.translators.responses_anthropic import TRANSLATOR as ANTHROPIC
from ext_proc.translators.responses_gemini import TRANSLATOR as GEMINI
from ext_proc.translators.responses_openai import VIA_CHAT as XAI
from simulators.conformance import iter_sse
from tests.conformance import assert_openai
from tests.translators._support import each_split, own_fixture, shared_fixture

CREATED = 1_760_000_000
REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "input": "hi",
    "instructions": "be kind",
    "stream": True,
}


def ctx(slug: str = "claude-sonnet-4-5", **request: Any) -> ResponseContext:
    return ResponseContext(slug, "upstream-name", CREATED, request={**REQUEST, "model": slug, **request})


def sdk_client(status: int, body: bytes, content_type: str) -> openai.OpenAI:
    """The openai SDK, reading ``body`` as the server's answer."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"content-type": content_type}, content=body)

    return openai.OpenAI(
        api_key="k",
        base_url="http://gateway.test/v1",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(answer)),
    )


# ------------------------------------------------------------------------ streams


def replay(stream: StreamTranslator, raw: bytes, size: int | None) -> bytes:
    """The client's transcript: the translated events, then the held last one with the charge."""
    if size is None:
        out = stream.feed(raw)
    else:
        out = b"".join(stream.feed(raw[i : i + size]) for i in range(0, len(raw), size))
    out += stream.finish()
    assert stream.done and stream.held is not None
    return out + ENDPOINT.stream_tail(stream.held, "0.000123")


def events_of(transcript: bytes) -> list[dict[str, Any]]:
    """Every event, checked: OpenAI's schema, ``event:`` naming its ``type``, numbered from 0."""
    events = []
    for name, data in iter_sse(transcript.decode()):
        event = json.loads(data)
        assert name == event["type"]
        assert_openai(event, "ResponseStreamEvent")
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert b"[DONE]" not in transcript
    return events


def sdk_final(transcript: bytes) -> tuple[list[Any], Any]:
    """What the openai SDK's stream helper makes of the transcript: its events, its final response."""
    client = sdk_client(200, transcript, "text/event-stream")
    with client.responses.stream(model="m", input="hi") as stream:
        seen = list(stream)
        return seen, stream.get_final_response()


@each_split
def test_an_anthropic_text_stream(size: int | None) -> None:
    stream = ANTHROPIC.stream(ctx())
    transcript = replay(stream, shared_fixture("anthropic_sdk_basic_response.sse"), size)
    events = events_of(transcript)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    last = events[-1]["response"]
    assert last["credits_used"] == 0.000123
    assert (last["status"], last["model"], last["created_at"], last["instructions"]) == (
        "completed",
        "claude-sonnet-4-5",
        CREATED,
        "be kind",
    )
    assert last["usage"]["input_tokens"] == 11 and last["usage"]["output_tokens"] == 6
    assert {e["response"]["id"] for e in events if "response" in e} == {stream.response_id}
    assert stream.usage == Usage(11, 0, 6, 0)

    seen, final = sdk_final(transcript)
    assert final.output_text == "Hello there!"
    assert final.id == stream.response_id and final.status == "completed"
    assert [e.type for e in seen] == [e["type"] for e in events]


@each_split
def test_an_anthropic_stream_with_text_then_a_tool_call(size: int | None) -> None:
    stream = ANTHROPIC.stream(ctx())
    transcript = replay(stream, shared_fixture("anthropic_sdk_tool_use_response.sse"), size)
    events = events_of(transcript)
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    assert [(i["type"], i["status"]) for i in added] == [
        ("message", "in_progress"),
        ("function_call", "in_progress"),
    ]
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert len(done) == 1 and json.loads(done[0]["arguments"]) == {"location": "Paris"}

    _, final = sdk_final(transcript)
    assert [item.type for item in final.output] == ["message", "function_call"]
    call = final.output[1]
    assert (call.name, json.loads(call.arguments), call.status) == (
        "get_weather",
        {"location": "Paris"},
        "completed",
    )
    assert call.call_id.startswith("toolu_")


@each_split
def test_a_gemini_function_call_stream(size: int | None) -> None:
    raw = shared_fixture(
        "gemini_firebase_streaming-success-thinking-function-call-thought-summary-signature.sse"
    )
    stream = GEMINI.stream(ctx("gemini-2-5-flash"))
    events = events_of(replay(stream, raw, size))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    output = events[-1]["response"]["output"]
    assert [(i["type"], i["name"]) for i in output] == [("function_call", "now")]
    assert events[-1]["response"]["usage"]["output_tokens_details"]["reasoning_tokens"] == 168


@each_split
def test_an_anthropic_refusal_is_a_refusal_part_of_a_complete_answer(size: int | None) -> None:
    stream = ANTHROPIC.stream(ctx())
    transcript = replay(stream, shared_fixture("anthropic_sdk_refusal_response.sse"), size)
    events = events_of(transcript)
    assert "response.refusal.delta" in [e["type"] for e in events]
    final = events[-1]["response"]
    assert final["status"] == "completed"
    assert final["output"][0]["content"][0]["type"] == "refusal"
    sdk_final(transcript)


@each_split
def test_the_output_limit_ends_the_stream_incomplete(size: int | None) -> None:
    stream = ANTHROPIC.stream(ctx())
    events = events_of(replay(stream, own_fixture("anthropic_max_tokens.sse"), size))
    last = events[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["status"] == "incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["response"]["output"][0]["status"] == "incomplete"
    assert last["response"]["output"][0]["content"][0]["text"] == "Once upon a"


@each_split
def test_a_provider_error_mid_stream_is_an_error_event_the_sdk_raises(size: int | None) -> None:
    stream = ANTHROPIC.stream(ctx())
    transcript = replay(stream, own_fixture("anthropic_error_midstream.sse"), size)
    events = events_of(transcript)
    last = events[-1]
    assert (last["type"], last["code"], last["error"]["code"]) == (
        "error",
        "upstream_unavailable",
        "upstream_unavailable",
    )
    assert last["credits_used"] == 0.000123  # no response object: at the top
    assert stream.error_code == "upstream_unavailable"
    assert "response.output_text.delta" in [e["type"] for e in events]
    with pytest.raises(openai.APIError) as info:
        sdk_final(transcript)
    assert info.value.code == "upstream_unavailable"


@each_split
def test_a_stream_cut_before_the_end_is_an_error_event(size: int | None) -> None:
    stream = ANTHROPIC.stream(ctx())
    events = events_of(replay(stream, own_fixture("anthropic_truncated.sse"), size))
    assert (events[-1]["type"], events[-1]["code"]) == ("error", "upstream_error")


CHAT_SSE = b"".join(
    b"data: " + orjson.dumps(chunk) + b"\n\n"
    for chunk in [
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "grok-4",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        },
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "grok-4",
            "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}],
        },
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "grok-4",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_a",
                                "type": "function",
                                "function": {"name": "f", "arguments": ""},
                            }
                        ]
                    },
                    "finish_reason": None,
                }
            ],
        },
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "grok-4",
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]},
                    "finish_reason": None,
                }
            ],
        },
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "grok-4",
            "choices": [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
                    "finish_reason": None,
                }
            ],
        },
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "grok-4",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 1,
                                "id": "call_b",
                                "type": "function",
                                "function": {"name": "g", "arguments": "{}"},
                            }
                        ]
                    },
                    "finish_reason": None,
                }
            ],
        },
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "grok-4",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
        },
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "grok-4",
            "choices": [],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        },
    ]
)


@each_split
def test_an_openai_format_chat_stream_with_two_calls(size: int | None) -> None:
    stream = XAI.stream(ctx("grok-4"))
    transcript = replay(stream, CHAT_SSE + b"data: [DONE]\n\n", size)
    events = events_of(transcript)
    output = events[-1]["response"]["output"]
    assert [(i["type"], i.get("name"), i.get("arguments")) for i in output] == [
        ("message", None, None),
        ("function_call", "f", '{"a":1}'),
        ("function_call", "g", "{}"),
    ]
    assert [i["call_id"] for i in output[1:]] == ["call_a", "call_b"]
    assert stream.usage == Usage(5, 0, 7, 0)
    _, final = sdk_final(transcript)
    assert final.output_text == "Hi" and [o.type for o in final.output] == [
        "message",
        "function_call",
        "function_call",
    ]


def test_a_stream_that_stops_without_its_end_gets_the_gateways_numbered_error() -> None:
    """An OpenAI-format stream that ends without ``[DONE]`` is not done: the gateway ends it
    with its own error event (the endpoint asks the translator for the next number)."""
    stream = XAI.stream(ctx("grok-4"))
    out = stream.feed(CHAT_SSE[:400]) + stream.finish()
    assert not stream.done
    last = ENDPOINT.stream_error(502, "upstream_error", "The provider ended the stream early.", stream)
    events = events_of(out + ENDPOINT.stream_tail(last, "0"))
    assert (events[-1]["type"], events[-1]["code"], events[-1]["credits_used"]) == (
        "error",
        "upstream_error",
        0,
    )


def test_an_empty_answer_is_an_empty_message() -> None:
    empty = (
        CHAT_SSE.split(b"\n\n")[0]
        + b"\n\n"
        + b"data: "
        + orjson.dumps(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "grok-4",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
        )
        + b"\n\ndata: [DONE]\n\n"
    )
    stream = XAI.stream(ctx("grok-4"))
    events = events_of(replay(stream, empty, None))
    assert events[-1]["response"]["output"][0]["content"] == [
        {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    ]


# ------------------------------------------------------------------------ answers


def answer_of(translator: Any, raw: bytes, context: ResponseContext, status: int = 200) -> dict[str, Any]:
    res = translator.response(status, raw, context)
    assert (res.status, res.error_code) == (200, None), res.body
    doc: dict[str, Any] = orjson.loads(res.body)
    assert_openai(doc, "Response")
    assert (doc["object"], doc["model"], doc["created_at"]) == ("response", context.slug, CREATED)
    assert doc["id"].startswith("resp_")
    parsed = sdk_client(200, res.body, "application/json").responses.create(model="m", input="hi")
    assert parsed.id == doc["id"]
    return doc


def test_an_anthropic_message_is_a_response() -> None:
    doc = answer_of(ANTHROPIC, shared_fixture("anthropic_recorded_message.json"), ctx(stream=False))
    message = json.loads(shared_fixture("anthropic_recorded_message.json"))
    assert doc["status"] == "completed"
    assert doc["output"][0]["content"][0]["text"] == message["content"][0]["text"]
    assert doc["usage"]["input_tokens"] == message["usage"]["input_tokens"]
    assert doc["instructions"] == "be kind" and doc["store"] is True and doc["tools"] == []


def test_an_anthropic_tool_use_is_a_function_call_item() -> None:
    doc = answer_of(ANTHROPIC, own_fixture("anthropic_message_tool_use.json"), ctx(stream=False))
    calls = [i for i in doc["output"] if i["type"] == "function_call"]
    assert calls and all(c["status"] == "completed" and c["id"].startswith("fc_") for c in calls)
    json.loads(calls[0]["arguments"])


def test_an_answer_cut_by_the_output_limit_is_incomplete() -> None:
    doc = answer_of(
        ANTHROPIC, own_fixture("anthropic_message_max_tokens.json"), ctx(stream=False, max_output_tokens=16)
    )
    assert (doc["status"], doc["incomplete_details"], doc["max_output_tokens"]) == (
        "incomplete",
        {"reason": "max_output_tokens"},
        16,
    )


def test_a_refusal_is_a_complete_answer_with_a_refusal_part() -> None:
    doc = answer_of(ANTHROPIC, own_fixture("anthropic_message_refusal.json"), ctx(stream=False))
    assert doc["status"] == "completed"
    assert [p["type"] for p in doc["output"][0]["content"]][-1] == "refusal"


def test_a_gemini_answer_is_a_response() -> None:
    raw = shared_fixture("gemini_firebase_unary-success-basic-reply-short.json")
    doc = answer_of(GEMINI, raw, ctx("gemini-2-5-flash", stream=False))
    assert "Mountain View" in doc["output"][0]["content"][0]["text"]
    assert (doc["usage"]["input_tokens"], doc["usage"]["output_tokens"]) == (7, 22)


def test_the_request_settings_are_echoed() -> None:
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}}
    context = ctx(
        stream=False,
        tools=[tool],
        tool_choice="required",
        temperature=0.2,
        metadata={"k": "v"},
        user="u",
        store=False,
        text={"format": {"type": "json_object"}},
        parallel_tool_calls=False,
    )
    doc = answer_of(ANTHROPIC, shared_fixture("anthropic_recorded_message.json"), context)
    assert doc["tools"] == [
        {
            "type": "function",
            "name": "f",
            "description": None,
            "parameters": {"type": "object"},
            "strict": True,
        }
    ]
    assert (doc["tool_choice"], doc["temperature"], doc["metadata"], doc["user"], doc["store"]) == (
        "required",
        0.2,
        {"k": "v"},
        "u",
        False,
    )
    assert doc["text"] == {"format": {"type": "json_object"}, "verbosity": "medium"}
    assert doc["parallel_tool_calls"] is False


def test_provider_errors_name_the_responses_parameter() -> None:
    error = orjson.dumps(
        {
            "type": "error",
            "error": {"type": "invalid_request_error", "message": "max_tokens: 999999 > 64000, the maximum"},
        }
    )
    res = ANTHROPIC.response(400, error, ctx(stream=False, max_output_tokens=999999))
    doc = orjson.loads(res.body)
    assert_openai(doc, "ErrorResponse")
    assert (res.status, doc["error"]["code"], doc["error"]["param"]) == (
        400,
        "invalid_value",
        "max_output_tokens",
    )
    limited = ANTHROPIC.response(
        429, orjson.dumps({"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}}), ctx()
    )
    assert (limited.status, limited.error_code) == (429, "rate_limit_exceeded")
