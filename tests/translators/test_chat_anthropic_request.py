"""OpenAI request → Anthropic Messages request; every body is checked by the Anthropic validator."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ext_proc.errors import GatewayError
from ext_proc.translators.base import Target
from ext_proc.translators.chat_anthropic import ANSWER_TOOL, ANSWER_VALUE_TOOL, ChatAnthropic
from tests.translators._support import (
    PDF,
    PNG,
    USER,
    Check,
    assert_anthropic_request,
    chat,
    each_case,
    weather_tool,
)

SONNET = "claude-sonnet-4-5"  # has structured outputs
HAIKU_35 = "claude-3-5-haiku-20241022"  # does not
WEATHER = weather_tool(
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city", "days"],
        "additionalProperties": False,
    }
)


def translate(body: dict[str, Any], model: str = SONNET) -> dict[str, Any]:
    target = Target("anthropic", "/base", "sk-ant-test", model)
    upstream = ChatAnthropic().request(body, target)
    assert upstream.path == "/base/v1/messages"
    assert upstream.headers == {
        "x-api-key": "sk-ant-test",
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
    }
    assert_anthropic_request(upstream.body)
    out: dict[str, Any] = orjson.loads(upstream.body)
    assert out["model"] == model
    return out


CASES: list[tuple[str, dict[str, Any], str, Check]] = [
    (
        "system and developer become top-level system blocks",
        chat({"role": "system", "content": "be brief"}, {"role": "developer", "content": "no emoji"}, USER),
        SONNET,
        lambda o: (
            o["system"] == [{"type": "text", "text": "be brief"}, {"type": "text", "text": "no emoji"}]
            and o["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
        ),
    ),
    (
        "consecutive same-role turns are merged",
        chat(
            USER,
            {"role": "user", "content": [{"type": "text", "text": "again"}]},
            {"role": "assistant", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ),
        SONNET,
        lambda o: (
            [m["role"] for m in o["messages"]] == ["user", "assistant", "user"]
            and len(o["messages"][0]["content"]) == 2
            and [b["text"] for b in o["messages"][1]["content"]] == ["a", "b"]
        ),
    ),
    (
        "max_tokens defaults from the model table",
        chat(),
        SONNET,
        lambda o: o["max_tokens"] == 64000,
    ),
    (
        "unknown models default to 4096",
        chat(),
        "claude-future-9",
        lambda o: o["max_tokens"] == 4096,
    ),
    (
        "max_completion_tokens wins over max_tokens",
        chat(max_tokens=100, max_completion_tokens=200),
        SONNET,
        lambda o: o["max_tokens"] == 200,
    ),
    (
        "stop as a string",
        chat(stop="END"),
        SONNET,
        lambda o: o["stop_sequences"] == ["END"],
    ),
    (
        "stop as a list",
        chat(stop=["a", "b"]),
        SONNET,
        lambda o: o["stop_sequences"] == ["a", "b"],
    ),
    (
        "temperature above Anthropic's range is clamped; top_p yields to it",
        chat(temperature=1.7, top_p=0.5),
        SONNET,
        lambda o: o["temperature"] == 1.0 and "top_p" not in o,
    ),
    (
        "top_p alone is kept",
        chat(top_p=0.5),
        SONNET,
        lambda o: o["top_p"] == 0.5 and "temperature" not in o,
    ),
    (
        "user becomes metadata.user_id",
        chat(user="u-42"),
        SONNET,
        lambda o: o["metadata"] == {"user_id": "u-42"},
    ),
    (
        "safety_identifier takes precedence over user",
        chat(user="u-42", safety_identifier="s-1"),
        SONNET,
        lambda o: o["metadata"] == {"user_id": "s-1"},
    ),
    (
        "sampling hints and OpenAI-only options are dropped",
        chat(
            seed=7,
            presence_penalty=0.5,
            frequency_penalty=0.5,
            store=True,
            metadata={"k": "v"},
            prediction={"type": "content", "content": "x"},
            service_tier="auto",
            reasoning_effort="high",
            verbosity="low",
            prompt_cache_key="k",
            n=1,
            logprobs=False,
            top_logprobs=3,
            stream_options={"include_usage": True},
            parallel_tool_calls=True,
        ),
        SONNET,
        lambda o: set(o) == {"model", "max_tokens", "messages"},
    ),
    (
        "stream",
        chat(stream=True),
        SONNET,
        lambda o: o["stream"] is True,
    ),
    (
        "tools with tool_choice auto",
        chat(tools=[WEATHER], tool_choice="auto"),
        SONNET,
        lambda o: (
            o["tools"][0]["name"] == "get_weather"
            and o["tools"][0]["input_schema"] == WEATHER["function"]["parameters"]
            and o["tools"][0]["description"] == "Weather for a city"
            and o["tool_choice"] == {"type": "auto"}
        ),
    ),
    (
        "tool_choice none",
        chat(tools=[WEATHER], tool_choice="none"),
        SONNET,
        lambda o: o["tool_choice"] == {"type": "none"},
    ),
    (
        "tool_choice required is any",
        chat(tools=[WEATHER], tool_choice="required"),
        SONNET,
        lambda o: o["tool_choice"] == {"type": "any"},
    ),
    (
        "named tool_choice",
        chat(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}),
        SONNET,
        lambda o: o["tool_choice"] == {"type": "tool", "name": "get_weather"},
    ),
    (
        "allowed_tools narrows the tool list",
        chat(
            tools=[WEATHER, {"type": "function", "function": {"name": "other"}}],
            tool_choice={
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "other"}}],
                },
            },
        ),
        SONNET,
        lambda o: [t["name"] for t in o["tools"]] == ["other"] and o["tool_choice"] == {"type": "any"},
    ),
    (
        "parallel_tool_calls false",
        chat(tools=[WEATHER], parallel_tool_calls=False),
        SONNET,
        lambda o: o["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True},
    ),
    (
        "parallel_tool_calls false with a named tool",
        chat(
            tools=[WEATHER],
            parallel_tool_calls=False,
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        ),
        SONNET,
        lambda o: (
            o["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
        ),
    ),
    (
        "strict tools get Anthropic's strict schema",
        chat(tools=[{**WEATHER, "function": {**WEATHER["function"], "strict": True}}]),
        SONNET,
        lambda o: (
            o["tools"][0]["strict"] is True
            and o["tools"][0]["input_schema"]["additionalProperties"] is False
            and "minimum" not in o["tools"][0]["input_schema"]["properties"]["days"]
            and "minimum: 1" in o["tools"][0]["input_schema"]["properties"]["days"]["description"]
        ),
    ),
    (
        "strict is dropped on models without structured outputs",
        chat(tools=[{**WEATHER, "function": {**WEATHER["function"], "strict": True}}]),
        HAIKU_35,
        lambda o: "strict" not in o["tools"][0],
    ),
    (
        "a tool without parameters gets an empty object schema",
        chat(tools=[{"type": "function", "function": {"name": "now"}}]),
        SONNET,
        lambda o: o["tools"][0]["input_schema"] == {"type": "object", "properties": {}},
    ),
    (
        "assistant tool calls and tool results",
        chat(
            USER,
            {
                "role": "assistant",
                "content": "let me check",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris","days":1}'},
                    },
                    {"id": "call.2+x", "type": "function", "function": {"name": "now", "arguments": ""}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call.2+x", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": "thanks"},
        ),
        SONNET,
        lambda o: (
            o["messages"][1]["content"]
            == [
                {"type": "text", "text": "let me check"},
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris", "days": 1},
                },
                {"type": "tool_use", "id": "call_2_x", "name": "now", "input": {}},
            ]
            and o["messages"][2]
            == {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_1",
                        "content": [{"type": "text", "text": "sunny"}],
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "call_2_x",
                        "content": [{"type": "text", "text": "noon"}],
                    },
                    {"type": "text", "text": "thanks"},
                ],
            }
        ),
    ),
    (
        "an assistant message with only tool calls and null content",
        chat(
            USER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "now", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": ""},
        ),
        SONNET,
        lambda o: (
            o["messages"][1]["content"] == [{"type": "tool_use", "id": "c", "name": "now", "input": {}}]
            and o["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "c"}]
        ),
    ),
    (
        "a trailing assistant prefill loses its trailing whitespace",
        chat(USER, {"role": "assistant", "content": "The answer is "}),
        SONNET,
        lambda o: o["messages"][-1]["content"] == [{"type": "text", "text": "The answer is"}],
    ),
    (
        "json_schema uses structured outputs where available",
        chat(
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "city",
                    "strict": True,
                    "schema": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string", "maxLength": 20},
                            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 3},
                            "kind": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
                        },
                        "required": ["name", "tags", "kind"],
                        "additionalProperties": False,
                    },
                },
            }
        ),
        SONNET,
        lambda o: (
            o["output_config"]["format"]["type"] == "json_schema"
            and o["output_config"]["format"]["schema"]["additionalProperties"] is False
            and "maxLength: 20" in o["output_config"]["format"]["schema"]["properties"]["name"]["description"]
            and "minItems" not in o["output_config"]["format"]["schema"]["properties"]["tags"]
            and "anyOf" in o["output_config"]["format"]["schema"]["properties"]["kind"]
            and "tools" not in o
        ),
    ),
    (
        "json_schema on an older model forces the answer tool",
        chat(
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "x",
                    "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
                },
            }
        ),
        HAIKU_35,
        lambda o: (
            o["tools"]
            == [
                {
                    "name": ANSWER_TOOL,
                    "description": "Give your final answer through this tool.",
                    "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}},
                }
            ]
            and o["tool_choice"] == {"type": "tool", "name": ANSWER_TOOL}
            and "output_config" not in o
        ),
    ),
    (
        "a non-object schema is wrapped in the value tool",
        chat(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "ids", "schema": {"type": "array", "items": {"type": "integer"}}},
            }
        ),
        HAIKU_35,
        lambda o: (
            o["tools"][0]["name"] == ANSWER_VALUE_TOOL
            and o["tools"][0]["input_schema"]["properties"]["value"]
            == {"type": "array", "items": {"type": "integer"}}
            and o["tool_choice"] == {"type": "tool", "name": ANSWER_VALUE_TOOL}
        ),
    ),
    (
        "json_object forces the answer tool with an open object schema",
        chat(response_format={"type": "json_object"}),
        SONNET,
        lambda o: (
            o["tools"][0]["name"] == ANSWER_TOOL
            and o["tools"][0]["input_schema"] == {"type": "object", "additionalProperties": True}
            and o["tool_choice"] == {"type": "tool", "name": ANSWER_TOOL}
        ),
    ),
    (
        "json_object next to the caller's tools: the model must call one of them",
        chat(response_format={"type": "json_object"}, tools=[WEATHER]),
        SONNET,
        lambda o: (
            [t["name"] for t in o["tools"]] == ["get_weather", ANSWER_TOOL]
            and o["tool_choice"] == {"type": "any"}
        ),
    ),
    (
        "response_format text changes nothing",
        chat(response_format={"type": "text"}),
        SONNET,
        lambda o: "tools" not in o and "output_config" not in o,
    ),
    (
        "image as a data URI",
        chat(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"},
                    },
                ],
            }
        ),
        SONNET,
        lambda o: (
            o["messages"][0]["content"][1]
            == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
        ),
    ),
    (
        "image as an https URL is fetched by Anthropic",
        chat(
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}}]}
        ),
        SONNET,
        lambda o: (
            o["messages"][0]["content"][0]
            == {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}}
        ),
    ),
    (
        "a PDF becomes a document block",
        chat(
            {
                "role": "user",
                "content": [
                    {
                        "type": "file",
                        "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "a.pdf"},
                    },
                    {"type": "text", "text": "summarise"},
                ],
            }
        ),
        SONNET,
        lambda o: (
            o["messages"][0]["content"][0]
            == {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                "title": "a.pdf",
            }
        ),
    ),
    (
        "a text file becomes a plain-text document",
        chat(
            {
                "role": "user",
                "content": [{"type": "file", "file": {"file_data": "data:text/plain;base64,aGk="}}],
            }
        ),
        SONNET,
        lambda o: (
            o["messages"][0]["content"][0]
            == {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hi"}}
        ),
    ),
]


@each_case(("body", "model", "check"), CASES)
def test_request(body: dict[str, Any], model: str, check: Check) -> None:
    out = translate(body, model)
    assert check(out), orjson.dumps(out).decode()


REJECTED: list[tuple[str, dict[str, Any], int, str, str | None]] = [
    ("n > 1", chat(n=2), 400, "unsupported_parameter", "n"),
    ("logprobs", chat(logprobs=True), 400, "unsupported_parameter", "logprobs"),
    ("logit_bias", chat(logit_bias={"50256": -100}), 400, "unsupported_parameter", "logit_bias"),
    ("audio output", chat(modalities=["text", "audio"]), 400, "unsupported_parameter", "modalities"),
    ("audio params", chat(audio={"voice": "alloy", "format": "mp3"}), 400, "unsupported_parameter", "audio"),
    ("web search", chat(web_search_options={}), 400, "unsupported_parameter", "web_search_options"),
    ("legacy functions", chat(functions=[{"name": "f"}]), 400, "unsupported_parameter", "functions"),
    (
        "custom tools",
        chat(tools=[{"type": "custom", "custom": {"name": "x"}}]),
        400,
        "unsupported_parameter",
        "tools[0]",
    ),
    (
        "file_id",
        chat(
            {
                "role": "user",
                "content": [{"type": "text", "text": "x"}, {"type": "file", "file": {"file_id": "f"}}],
            }
        ),
        400,
        "unsupported_parameter",
        "messages[0].content[1].file.file_id",
    ),
    (
        "audio input",
        chat(
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}],
            }
        ),
        400,
        "unsupported_parameter",
        "messages[0].content[0]",
    ),
    (
        "an image type Anthropic cannot read",
        chat(
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}],
            }
        ),
        400,
        "invalid_image_url",
        "messages[0].content[0].image_url.url",
    ),
    (
        "a data URI that is not base64",
        chat(
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}
        ),
        400,
        "invalid_image_url",
        "messages[0].content[0].image_url.url",
    ),
    ("no messages", {"model": "x"}, 400, "invalid_request", "messages"),
    ("unknown role", chat({"role": "robot", "content": "x"}), 400, "invalid_request", "messages[0].role"),
    (
        "tool arguments that are not a JSON object",
        chat(
            USER,
            {
                "role": "assistant",
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1"}}],
            },
        ),
        400,
        "invalid_request",
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        "a caller tool using the gateway's reserved name",
        chat(tools=[{"type": "function", "function": {"name": ANSWER_TOOL}}]),
        400,
        "invalid_request",
        "tools[0].function.name",
    ),
    ("a bad temperature", chat(temperature="hot"), 400, "invalid_request", "temperature"),
]


@each_case(("body", "status", "code", "param"), REJECTED)
def test_rejected(body: dict[str, Any], status: int, code: str, param: str | None) -> None:
    with pytest.raises(GatewayError) as info:
        ChatAnthropic().request(body, Target("anthropic", "", "k", SONNET))
    assert (info.value.status, info.value.code, info.value.param) == (status, code, param)


def test_no_media_urls() -> None:
    body = chat(
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}
    )
    assert ChatAnthropic().media_urls(body) == []


def test_request_does_not_mutate_the_callers_body() -> None:
    body = chat(
        {"role": "system", "content": "s"},
        USER,
        {"role": "assistant", "content": "prefill "},
        tools=[{**WEATHER, "function": {**WEATHER["function"], "strict": True}}],
        response_format={"type": "json_object"},
    )
    before = orjson.dumps(body)
    translate(body)
    assert orjson.dumps(body) == before
