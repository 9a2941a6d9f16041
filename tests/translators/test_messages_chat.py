"""Anthropic Messages on OpenAI-format and Gemini providers, through each one's chat pair.

Every request the pair sends is checked with the provider's own validator (OpenAI's spec,
Gemini's protos); every answer and stream it returns with the Anthropic SDK's types and
Anthropic's event order, and streams are accumulated by the SDK's own ``messages.stream()``
accumulator, replayed in 1-byte, 7-byte and whole pieces.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from ext_proc.errors import GatewayError
from ext_proc.translators import chat_openai
from ext_proc.translators.base import Media, ResponseContext, Target, TranslatedResponse, Usage
from ext_proc.translators.messages_chat import chat_request
from ext_proc.translators.messages_gemini import MessagesGemini
from ext_proc.translators.messages_openai import MessagesOpenAI
from tests.conformance import assert_openai
from tests.translators._support import (
    PDF,
    PNG,
    anthropic_events,
    assert_anthropic_message,
    assert_gemini_request,
    each_split,
    final_message,
    messages_replay,
    own_fixture,
    shared_fixture,
)

OPENAI = MessagesOpenAI()
GEMINI = MessagesGemini()
SLUG = "my-model"
CTX = ResponseContext(SLUG, "gpt-4o-mini", 1_760_000_000)
GEMINI_CTX = ResponseContext(SLUG, "gemini-2.5-flash", 1_760_000_000)
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
# A conversation with every kind of block the chat shape can carry.
CONVERSATION: list[dict[str, Any]] = [
    {
        "role": "user",
        "content": [
            {
                "type": "text",
                "text": "What is the weather where this was taken?",
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                "title": "trip.pdf",
            },
            {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": "Day 1: Paris"},
            },
        ],
    },
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "The PDF says Paris.", "signature": "sig"},
            {"type": "text", "text": "I'll check."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
        ],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01A",
                "content": [{"type": "text", "text": "sunny, 21C"}],
            },
            {"type": "text", "text": "And tomorrow?"},
        ],
    },
]
FULL: dict[str, Any] = {
    "model": SLUG,
    "max_tokens": 512,
    "system": [{"type": "text", "text": "Be terse."}, {"type": "text", "text": "Use metric units."}],
    "messages": CONVERSATION,
    "tools": [WEATHER],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "temperature": 0.3,
    "top_p": 0.9,
    "top_k": 40,
    "stop_sequences": ["END"],
    "metadata": {"user_id": "user-42"},
    "service_tier": "auto",
    "stream": True,
}


def openai_request(body: dict[str, Any], kind: str = "openai", model: str = "gpt-4o-mini") -> dict[str, Any]:
    upstream = OPENAI.request(dict(body), Target(kind, "/v1", "sk-provider", model))
    assert upstream.path == "/v1/chat/completions"
    assert upstream.headers == {"authorization": "Bearer sk-provider", "content-type": "application/json"}
    out: dict[str, Any] = orjson.loads(upstream.body)
    assert_openai(out, "CreateChatCompletionRequest")
    return out


def gemini_request(
    body: dict[str, Any], media: dict[str, Media] | None = None, model: str = "gemini-2.5-flash"
) -> tuple[str, dict[str, Any]]:
    upstream = GEMINI.request(dict(body), Target("google", "", "g-key", model, media or {}))
    out: dict[str, Any] = orjson.loads(upstream.body)
    assert_gemini_request(out)
    return upstream.path, out


# --------------------------------------------------------------------- request


def test_a_full_conversation_becomes_the_chat_request_openai_takes() -> None:
    out = openai_request(FULL)
    assert out == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be terse.\n\nUse metric units."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is the weather where this was taken?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    {
                        "type": "file",
                        "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "trip.pdf"},
                    },
                    {"type": "text", "text": "Day 1: Paris"},
                ],
            },
            {
                "role": "assistant",
                "content": "I'll check.",
                "tool_calls": [
                    {
                        "id": "toolu_01A",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_01A", "content": "sunny, 21C"},
            {"role": "user", "content": "And tomorrow?"},
        ],
        "max_completion_tokens": 512,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": ["END"],
        "user": "user-42",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": WEATHER["input_schema"],
                    "description": "Weather for a city",
                },
            }
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@pytest.mark.parametrize(
    ("kind", "field"),
    [("openai", "max_completion_tokens"), ("xai", "max_tokens"), ("openai_compatible", "max_tokens")],
)
def test_the_output_limit_goes_where_the_server_reads_it(kind: str, field: str) -> None:
    out = openai_request(
        {"model": SLUG, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}, kind
    )
    other = "max_tokens" if field == "max_completion_tokens" else "max_completion_tokens"
    assert out[field] == 64 and other not in out


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, {"tool_choice": "auto"}),
        ({"type": "any"}, {"tool_choice": "required"}),
        ({"type": "none"}, {"tool_choice": "none"}),
        (
            {"type": "tool", "name": "get_weather"},
            {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        ),
        (
            {"type": "any", "disable_parallel_tool_use": True},
            {"tool_choice": "required", "parallel_tool_calls": False},
        ),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: dict[str, Any]) -> None:
    body = {
        "model": SLUG,
        "max_tokens": 9,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [WEATHER],
        "tool_choice": choice,
    }
    out = openai_request(body)
    assert {k: out[k] for k in ("tool_choice", "parallel_tool_calls") if k in out} == expected


def test_a_tool_choice_without_tools_is_not_sent() -> None:
    out = openai_request(
        {
            "model": SLUG,
            "max_tokens": 9,
            "messages": [{"role": "user", "content": "hi"}],
            "tool_choice": {"type": "auto"},
        }
    )
    assert "tool_choice" not in out and "tools" not in out


@pytest.mark.parametrize(
    ("model", "thinking", "effort"),
    [
        ("o3-mini", {"type": "enabled", "budget_tokens": 1024}, "low"),
        ("o4-mini", {"type": "enabled", "budget_tokens": 8000}, "medium"),
        ("gpt-5", {"type": "enabled", "budget_tokens": 32000}, "high"),
        ("gpt-5", {"type": "disabled"}, None),
        ("gpt-4o", {"type": "enabled", "budget_tokens": 32000}, None),  # gpt-4o refuses reasoning_effort
    ],
)
def test_thinking_becomes_reasoning_effort_where_the_model_takes_it(
    model: str, thinking: dict[str, Any], effort: str | None
) -> None:
    body = {
        "model": SLUG,
        "max_tokens": 64000,
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": thinking,
    }
    assert openai_request(body, model=model).get("reasoning_effort") == effort


def test_thinking_becomes_a_gemini_thinking_budget() -> None:
    body = {
        "model": SLUG,
        "max_tokens": 9000,
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "enabled", "budget_tokens": 8000},
    }
    _, out = gemini_request(body)  # the budget as given, and the thought summary asked for
    assert out["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 8000, "includeThoughts": True}
    _, pro = gemini_request(
        {**body, "thinking": {"type": "enabled", "budget_tokens": 99_999}}, model="gemini-2.5-pro"
    )
    assert pro["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 32768, "includeThoughts": True}
    _, older = gemini_request(body, model="gemini-2.0-flash")  # no thinking budget before 2.5
    assert "thinkingConfig" not in older.get("generationConfig", {})
    _, plain = gemini_request({k: v for k, v in body.items() if k != "thinking"})
    assert "thinkingConfig" not in plain.get("generationConfig", {})


def test_gemini_thoughts_come_back_as_thinking_blocks() -> None:
    answer = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"text": "Weighing it up.", "thought": True}, {"text": "Hello."}],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "thoughtsTokenCount": 4},
        "responseId": "r1",
    }
    res = GEMINI.response(200, orjson.dumps(answer), GEMINI_CTX)
    message = orjson.loads(res.body)
    assert_anthropic_message(message)
    assert message["content"] == [
        {"type": "thinking", "thinking": "Weighing it up.", "signature": ""},
        {"type": "text", "text": "Hello."},
    ]
    assert message["usage"]["output_tokens"] == 6  # thoughts are output, as Gemini bills them


def test_output_config_format_becomes_a_json_schema_answer() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    body = {
        "model": SLUG,
        "max_tokens": 9,
        "messages": [{"role": "user", "content": "hi"}],
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
    }
    assert openai_request(body)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema},
    }
    assert gemini_request(body)[1]["generationConfig"]["responseJsonSchema"] == schema


def test_the_conversation_becomes_gemini_contents() -> None:
    path, out = gemini_request({**FULL, "stream": False})
    assert path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert out["systemInstruction"] == {"parts": [{"text": "Be terse.\n\nUse metric units."}]}
    user, model, results = out["contents"]
    assert [p.get("inlineData", {}).get("mimeType") for p in user["parts"]] == [
        None,
        "image/png",
        "application/pdf",
        None,
    ]
    assert model["parts"][1]["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}}
    assert results["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"result": "sunny, 21C"}}},
        {"text": "And tomorrow?"},
    ]
    assert out["generationConfig"] == {
        "stopSequences": ["END"],
        "temperature": 0.3,
        "topP": 0.9,
        "maxOutputTokens": 512,
    }


def test_gemini_gets_the_bytes_of_an_image_given_by_url() -> None:
    url = "https://images.test/cat.png"
    image = {"type": "image", "source": {"type": "url", "url": url}}
    body = {
        "model": SLUG,
        "max_tokens": 9,
        "messages": [{"role": "user", "content": [image, {"type": "text", "text": "what?"}]}],
    }
    assert GEMINI.media_urls(body) == [url]
    assert OPENAI.media_urls(body) == []  # OpenAI fetches it itself
    _, out = gemini_request(body, {url: Media("image/png", b"\x89PNG")})
    assert out["contents"][0]["parts"][0] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw=="}}
    assert openai_request(body)["messages"][0]["content"][0] == {
        "type": "image_url",
        "image_url": {"url": url},
    }


@pytest.mark.parametrize(
    ("change", "param"),
    [
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "{"}]},
            "messages",
        ),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0"),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
        ({"mcp_servers": [{"type": "url", "url": "https://mcp.test", "name": "m"}]}, "mcp_servers"),
        ({"container": "container_1"}, "container"),
        ({"inference_geo": "us"}, "inference_geo"),
        ({"unheard_of": True}, "unheard_of"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image", "source": {"type": "file", "file_id": "file_1"}}],
                    }
                ]
            },
            "messages.0.content.0.source",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}}
                        ],
                    }
                ]
            },
            "messages.0.content.0.source",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}],
                    },
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t1",
                                "content": [
                                    {
                                        "type": "image",
                                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                                    }
                                ],
                            }
                        ],
                    },
                ]
            },
            "messages.1.content.0.content.0",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "search_result", "source": "s", "title": "t", "content": []}],
                    }
                ]
            },
            "messages.0.content.0",
        ),
    ],
)
def test_what_the_chat_shape_cannot_carry_is_refused(change: dict[str, Any], param: str) -> None:
    body = {"model": SLUG, "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}], **change}
    for pair in (OPENAI, GEMINI):
        with pytest.raises(GatewayError) as info:
            pair.request(dict(body), Target("openai", "/v1", "k", "gpt-4o"))
        assert (info.value.status, info.value.code, info.value.param) == (400, "unsupported_parameter", param)


def test_what_changes_nothing_for_the_answer_is_dropped() -> None:
    body = {
        "model": SLUG,
        "max_tokens": 9,
        "messages": [{"role": "user", "content": "hi"}],
        "top_k": 5,
        "service_tier": "auto",
        "cache_control": {"type": "ephemeral"},
        "speed": "fast",
    }
    assert chat_request(body) == {
        "model": SLUG,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 9,
    }


# -------------------------------------------------------------------- response


def completion(message: dict[str, Any], finish: str, usage: dict[str, Any] | None = None) -> bytes:
    doc = {
        "id": "chatcmpl-Abc123",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "refusal": None, **message},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": usage
        or {
            "prompt_tokens": 30,
            "completion_tokens": 7,
            "total_tokens": 37,
            "prompt_tokens_details": {"cached_tokens": 10},
        },
    }
    assert_openai(doc, "CreateChatCompletionResponse")
    return orjson.dumps(doc)


def test_a_chat_answer_becomes_a_message() -> None:
    res = OPENAI.response(200, completion({"content": "Hello!"}, "stop"), CTX)
    doc = assert_anthropic_message(res.body)
    assert doc == {
        "id": "msg_Abc123",
        "type": "message",
        "role": "assistant",
        "model": SLUG,
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 20,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 10,
            "output_tokens": 7,
        },
    }
    assert res.usage == Usage(30, 10, 7)


def test_tool_calls_become_tool_use_blocks() -> None:
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        },
        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "not json"}},
    ]
    doc = assert_anthropic_message(
        OPENAI.response(200, completion({"content": None, "tool_calls": calls}, "tool_calls"), CTX).body
    )
    assert doc["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"arguments": "not json"}},
    ]
    assert doc["stop_reason"] == "tool_use"


@pytest.mark.parametrize(("finish", "stop_reason"), [("length", "max_tokens"), ("content_filter", "refusal")])
def test_finish_reasons_become_stop_reasons(finish: str, stop_reason: str) -> None:
    message = (
        {"content": None, "refusal": "I can't help with that."}
        if finish == "content_filter"
        else {"content": "Once upon"}
    )
    doc = assert_anthropic_message(OPENAI.response(200, completion(message, finish), CTX).body)
    assert doc["stop_reason"] == stop_reason and doc["content"][0]["type"] == "text"


def test_a_gemini_answer_becomes_a_message() -> None:
    raw = shared_fixture(
        "gemini_firebase_unary-success-thinking-function-call-thought-summary-signature.json"
    )
    res = GEMINI.response(200, raw, GEMINI_CTX)
    doc = assert_anthropic_message(res.body)
    # the recorded answer has a thought summary (Gemini's thought part): a thinking block first
    assert [b["type"] for b in doc["content"]] == ["thinking", "tool_use"]
    assert doc["content"][0]["thinking"] and doc["content"][0]["signature"] == ""
    assert doc["stop_reason"] == "tool_use" and doc["model"] == SLUG
    assert res.usage is not None and doc["usage"]["output_tokens"] == res.usage.output_tokens > 0


@pytest.mark.parametrize(
    ("pair", "status", "body", "client_status", "code", "kind"),
    [
        (
            OPENAI,
            429,
            {
                "error": {
                    "message": "Rate limit reached in organization org-secret",
                    "type": "requests",
                    "code": "rate_limit_exceeded",
                }
            },
            429,
            "rate_limit_exceeded",
            "rate_limit_error",
        ),
        (
            OPENAI,
            400,
            {
                "error": {
                    "message": "bad temperature",
                    "type": "invalid_request_error",
                    "param": "temperature",
                    "code": "invalid_value",
                }
            },
            400,
            "invalid_value",
            "invalid_request_error",
        ),
        (
            OPENAI,
            401,
            {"error": {"message": "Incorrect API key provided: sk-...abcd", "code": "invalid_api_key"}},
            502,
            "upstream_error",
            "api_error",
        ),
        (
            GEMINI,
            503,
            {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}},
            503,
            "upstream_unavailable",
            "overloaded_error",
        ),
        (
            GEMINI,
            404,
            {"error": {"code": 404, "message": "models/x is not found", "status": "NOT_FOUND"}},
            404,
            "model_not_found",
            "not_found_error",
        ),
    ],
)
def test_provider_errors_come_back_in_anthropics_shape(
    pair: Any, status: int, body: dict[str, Any], client_status: int, code: str, kind: str
) -> None:
    res = pair.response(status, orjson.dumps(body), CTX)
    doc = assert_anthropic_message(res.body)
    assert (res.status, res.error_code) == (client_status, code)
    assert doc["type"] == "error" and doc["error"]["type"] == kind and doc["error"]["code"] == code
    assert "org-secret" not in doc["error"]["message"] and "sk-" not in doc["error"]["message"]


# ---------------------------------------------------------------------- stream


@each_split
def test_an_openai_stream_becomes_anthropics_events(size: int | None) -> None:
    stream = OPENAI.stream(CTX)
    out = messages_replay(stream, own_fixture("openai_text_and_tool_calls.sse"), size)
    assert stream.done and stream.error_code is None
    assert stream.usage == Usage(40, 8, 21)
    names = [name for name, _ in anthropic_events(out)]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        *(["content_block_delta"] * 2),
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    message = final_message(out)
    assert message.id == "msg_CwTools01" and message.model == SLUG
    assert [b.type for b in message.content] == ["text", "tool_use", "tool_use"]
    assert message.content[0].text == "Checking both."
    assert [(b.id, b.name, b.input) for b in message.content[1:]] == [
        ("call_Paris01", "get_weather", {"city": "Paris"}),
        ("call_Oslo02", "get_weather", {"city": "Oslo"}),
    ]
    assert message.stop_reason == "tool_use"
    assert (
        message.usage.input_tokens,
        message.usage.cache_read_input_tokens,
        message.usage.output_tokens,
    ) == (32, 8, 21)
    stop = anthropic_events(out)[-1][1]
    assert stop == {"type": "message_stop", "credits_used": 0.25}


@each_split
@pytest.mark.parametrize(
    "name",
    [
        "gemini_firebase_streaming-success-basic-reply-short.sse",
        "gemini_firebase_streaming-success-basic-reply-long.sse",
        "gemini_firebase_streaming-success-thinking-function-call-thought-summary-signature.sse",
        "gemini_firebase_streaming-success-thinking-reply-thought-summary.sse",
    ],
)
def test_recorded_gemini_streams_become_anthropics_events(name: str, size: int | None) -> None:
    raw = shared_fixture(name)
    stream = GEMINI.stream(GEMINI_CTX)
    out = messages_replay(stream, raw, size)
    assert stream.done and stream.error_code is None
    message = final_message(out)
    chat = GEMINI.chat.stream(replace(GEMINI_CTX, include_usage=False))
    chat.feed(raw)
    assert stream.usage == chat.usage and stream.usage is not None
    assert message.usage.output_tokens == stream.usage.output_tokens
    assert message.model == SLUG and message.stop_reason in ("end_turn", "tool_use")
    thoughts = [block for block in message.content if block.type == "thinking"]
    if "thought-summary" in name:  # Gemini's thought parts: Anthropic thinking blocks, first
        assert thoughts and thoughts[0].thinking and message.content[0].type == "thinking"
    else:
        assert not thoughts


@each_split
def test_a_gemini_error_midstream_is_anthropics_error_event(size: int | None) -> None:
    stream = GEMINI.stream(GEMINI_CTX)
    out = messages_replay(stream, own_fixture("gemini_error_midstream.sse"), size)
    name, data = anthropic_events(out)[-1]
    assert name == "error" and stream.error_code == "upstream_unavailable" and stream.done
    assert data == {
        "type": "error",
        "error": {
            "type": "overloaded_error",
            "code": "upstream_unavailable",
            "message": data["error"]["message"],
        },
        "credits_used": 0.25,
    }
    assert anthropic_events(out)[0][0] == "message_start"


def test_a_blocked_gemini_prompt_is_the_streams_only_event() -> None:
    stream = GEMINI.stream(GEMINI_CTX)
    out = messages_replay(
        stream, shared_fixture("gemini_firebase_streaming-failure-prompt-blocked-safety.sse"), None
    )
    assert [name for name, _ in anthropic_events(out)] == ["error"]
    assert stream.error_code == "content_filter"


def test_an_openai_error_event_ends_the_stream() -> None:
    raw = (
        own_fixture("openai_text_and_tool_calls.sse").split(b"\n\n")[1]
        + b"\n\ndata: "
        + orjson.dumps({"error": {"message": "server error", "type": "server_error", "code": None}})
        + b"\n\n"
    )
    stream = OPENAI.stream(CTX)
    out = messages_replay(stream, raw, None)
    assert anthropic_events(out)[-1][0] == "error" and stream.done and stream.error_code == "upstream_error"


def test_a_stream_cut_short_is_not_done() -> None:
    raw = own_fixture("openai_text_and_tool_calls.sse")
    stream = OPENAI.stream(CTX)
    out = stream.feed(raw[: raw.index(b'"finish_reason":"tool_calls"')]) + stream.finish()
    assert not stream.done and stream.held is None and stream.error_code is None
    assert anthropic_events(out)[0][0] == "message_start"  # the exchange adds the error event


def test_an_empty_answer_is_still_a_whole_message() -> None:
    base = {"id": "chatcmpl-E", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks = [
        {
            **base,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        },
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    raw = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    stream = OPENAI.stream(CTX)
    message = final_message(messages_replay(stream, raw, None))
    assert message.content == [] and message.stop_reason == "end_turn"


def test_the_chat_pair_answers_the_same_as_for_chat() -> None:
    """The composition adds nothing to the provider's side: the chat pair's usage, unchanged."""
    raw = completion({"content": "Hi"}, "stop")
    chat = chat_openai.TRANSLATOR.response(200, raw, CTX)
    res = OPENAI.response(200, raw, CTX)
    assert isinstance(res, TranslatedResponse) and res.usage == chat.usage
