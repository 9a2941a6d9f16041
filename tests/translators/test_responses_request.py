"""Responses API request → the chat request → each provider's request.

Every provider body is checked by that provider's validator (Anthropic's SDK types,
Gemini's protos, OpenAI's spec); what cannot be carried is 400 ``unsupported_parameter``
naming the Responses parameter, and errors of the chat side name the Responses parameter too.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ext_proc.errors import GatewayError
from ext_proc.translators.base import Target
from ext_proc.translators.responses_anthropic import TRANSLATOR as ANTHROPIC
from ext_proc.translators.responses_gemini import TRANSLATOR as GEMINI
from ext_proc.translators.responses_openai import TRANSLATOR as OPENAI
from ext_proc.translators.responses_openai import VIA_CHAT as XAI
from ext_proc.translators.responses_request import chat_request, responses_param
from tests.conformance import assert_openai
from tests.translators._support import PDF, PNG, assert_anthropic_request, assert_gemini_request

SONNET = "claude-sonnet-4-5"
FLASH = "gemini-2.5-flash"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
PNG_URI = f"data:image/png;base64,{PNG}"
PDF_URI = f"data:application/pdf;base64,{PDF}"


def responses(**params: Any) -> dict[str, Any]:
    return {"model": "slug", "input": "hi", **params}


def anthropic(body: dict[str, Any], model: str = SONNET) -> dict[str, Any]:
    upstream = ANTHROPIC.request(dict(body), Target("anthropic", "/a", "sk-ant", model))
    assert upstream.path == "/a/v1/messages"
    assert upstream.headers["x-api-key"] == "sk-ant"
    assert_anthropic_request(upstream.body)
    out: dict[str, Any] = orjson.loads(upstream.body)
    return out


def gemini(body: dict[str, Any], model: str = FLASH) -> dict[str, Any]:
    upstream = GEMINI.request(dict(body), Target("google", "/g", "AIza", model))
    assert upstream.path.startswith(f"/g/v1beta/models/{model}:")
    assert_gemini_request(upstream.body)
    out: dict[str, Any] = orjson.loads(upstream.body)
    return out


def xai(body: dict[str, Any]) -> dict[str, Any]:
    upstream = XAI.request(dict(body), Target("xai", "/v1", "xai-key", "grok-4"))
    assert upstream.path == "/v1/chat/completions"  # xAI gets chat completions
    out: dict[str, Any] = orjson.loads(upstream.body)
    assert_openai(out, "CreateChatCompletionRequest")
    return out


def refused(body: dict[str, Any], translator: Any = ANTHROPIC) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        translator.request(dict(body), Target("anthropic", "/a", "k", SONNET))
    assert info.value.status == 400
    return info.value


# ------------------------------------------------------------------------ the chat request


def test_instructions_and_a_string_input_are_a_system_and_a_user_message() -> None:
    chat = chat_request(responses(instructions="be brief", input="hello"))
    assert chat.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello"},
    ]
    assert chat.origins == ["instructions", "input"]


def test_every_parameter_that_has_a_chat_equivalent_gets_it() -> None:
    body = responses(
        max_output_tokens=300,
        temperature=0.3,
        top_p=0.9,
        parallel_tool_calls=False,
        user="u-1",
        safety_identifier="s-1",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        text={"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}},
        reasoning={"effort": "low", "summary": "auto"},
        stream=True,
        # the gateway's or OpenAI's own concerns: no chat equivalent, nothing changes without them
        metadata={"team": "a"},
        store=True,
        service_tier="auto",
        prompt_cache_key="k",
        truncation="auto",
        max_tool_calls=3,
        include=["reasoning.encrypted_content"],
        stream_options={"include_obfuscation": False},
    )
    assert chat_request(body).body == {
        "model": "slug",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 300,
        "temperature": 0.3,
        "top_p": 0.9,
        "parallel_tool_calls": False,
        "user": "u-1",
        "safety_identifier": "s-1",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": WEATHER["parameters"],
                    "strict": True,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
        },
        "reasoning_effort": "low",
        "stream": True,
    }


def test_a_tool_round_trip_becomes_tool_calls_and_a_tool_message() -> None:
    body = responses(
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Checking."}],
            },
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city":"Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": '{"temp":21}'},
        ],
        tools=[WEATHER],
    )
    chat = chat_request(body)
    assert chat.body["messages"] == [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp":21}'},
    ]
    assert chat.origins == ["input[0]", "input[1]", "input[3]"]

    out = anthropic(body)
    assert out["messages"][1]["content"][-1] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    assert out["messages"][2]["content"][0]["type"] == "tool_result"
    assert out["messages"][2]["content"][0]["tool_use_id"] == "call_1"

    parts = gemini(body)["contents"]
    assert parts[1]["parts"][-1]["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}}
    assert parts[2]["parts"][0]["functionResponse"]["name"] == "get_weather"


def test_function_calls_without_a_message_before_them_are_one_assistant_turn() -> None:
    body = responses(
        input=[
            {"role": "user", "content": "two cities"},
            {"type": "function_call", "call_id": "a", "name": "get_weather", "arguments": "{}"},
            {"type": "function_call", "call_id": "b", "name": "get_weather", "arguments": "{}"},
            {
                "type": "function_call_output",
                "call_id": "a",
                "output": [{"type": "input_text", "text": "sun"}],
            },
            {"type": "function_call_output", "call_id": "b", "output": "rain"},
        ]
    )
    messages = chat_request(body).body["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["a", "b"]
    assert messages[2]["content"] == [{"type": "text", "text": "sun"}]
    anthropic(body)
    gemini(body)


def test_text_image_and_file_parts_reach_each_provider() -> None:
    body = responses(
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "what is this?"},
                    {"type": "input_image", "image_url": PNG_URI, "detail": "high"},
                    {"type": "input_file", "filename": "doc.pdf", "file_data": PDF_URI},
                ],
            }
        ]
    )
    assert chat_request(body).body["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": PNG_URI, "detail": "high"}},
        {"type": "file", "file": {"file_data": PDF_URI, "filename": "doc.pdf"}},
    ]
    blocks = anthropic(body)["messages"][0]["content"]
    assert [b["type"] for b in blocks] == ["text", "image", "document"]
    parts = gemini(body)["contents"][0]["parts"]
    assert [next(iter(p)) for p in parts] == ["text", "inlineData", "inlineData"]
    assert xai(body)["messages"][0]["content"][1]["type"] == "image_url"


def test_system_and_developer_items_are_system_text() -> None:
    body = responses(
        instructions="first",
        input=[
            {"role": "developer", "content": [{"type": "input_text", "text": "second"}]},
            {"role": "user", "content": "hi"},
        ],
    )
    assert anthropic(body)["system"] == [
        {"type": "text", "text": "first"},
        {"type": "text", "text": "second"},
    ]
    assert gemini(body)["systemInstruction"]["parts"] == [{"text": "first"}, {"text": "second"}]


def test_reasoning_items_from_an_earlier_answer_are_dropped() -> None:
    body = responses(
        input=[
            {"role": "user", "content": "hi"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hello"}]},
            {"role": "user", "content": "again"},
        ]
    )
    assert [m["role"] for m in chat_request(body).body["messages"]] == ["user", "assistant", "user"]


def test_output_limit_sampling_and_user_reach_each_provider() -> None:
    body = responses(
        max_output_tokens=64, temperature=0.5, user="u-7", parallel_tool_calls=False, tools=[WEATHER]
    )
    out = anthropic(body)
    assert (out["max_tokens"], out["temperature"], out["metadata"]) == (64, 0.5, {"user_id": "u-7"})
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    config = gemini(body)["generationConfig"]
    assert (config["maxOutputTokens"], config["temperature"]) == (64, 0.5)


def test_json_formats_reach_each_provider() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    body = responses(text={"format": {"type": "json_schema", "name": "answer", "schema": schema}})
    assert anthropic(body)["output_config"]["format"]["type"] == "json_schema"
    config = gemini(body)["generationConfig"]
    assert config["responseMimeType"] == "application/json" and config["responseJsonSchema"] == schema
    plain = responses(text={"format": {"type": "json_object"}})
    assert gemini(plain)["generationConfig"]["responseMimeType"] == "application/json"
    assert xai(plain)["response_format"] == {"type": "json_object"}
    assert "response_format" not in xai(responses(text={"format": {"type": "text"}, "verbosity": "low"}))


def test_tool_choices_reach_each_provider() -> None:
    named = responses(tools=[WEATHER], tool_choice={"type": "function", "name": "get_weather"})
    assert anthropic(named)["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert gemini(named)["toolConfig"]["functionCallingConfig"] == {
        "mode": "ANY",
        "allowedFunctionNames": ["get_weather"],
    }
    assert anthropic(responses(tools=[WEATHER], tool_choice="required"))["tool_choice"] == {"type": "any"}
    allowed = responses(
        tools=[WEATHER, {**WEATHER, "name": "other"}],
        tool_choice={
            "type": "allowed_tools",
            "mode": "required",
            "tools": [{"type": "function", "name": "other"}],
        },
    )
    out = anthropic(allowed)
    assert [t["name"] for t in out["tools"]] == ["other"] and out["tool_choice"] == {"type": "any"}


def test_reasoning_effort_is_a_thinking_budget_where_gemini_has_one() -> None:
    body = responses(reasoning={"effort": "low"})
    assert gemini(body)["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 1024}


def test_the_openai_pair_passes_the_request_through() -> None:
    body = responses(instructions="x", tools=[WEATHER], store=False, metadata={"a": "b"})
    upstream = OPENAI.request(dict(body), Target("openai", "/v1", "sk-o", "gpt-4o-2024-08-06"))
    assert upstream.path == "/v1/responses"
    assert upstream.headers == {"authorization": "Bearer sk-o", "content-type": "application/json"}
    assert orjson.loads(upstream.body) == {**body, "model": "gpt-4o-2024-08-06"}


# ------------------------------------------------------------------------ what cannot be carried

REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("a hosted tool", responses(tools=[{"type": "web_search"}]), "tools[0]"),
    ("a custom tool", responses(tools=[WEATHER, {"type": "custom", "name": "c"}]), "tools[1]"),
    (
        "a hosted tool call item",
        responses(input=[{"type": "web_search_call", "id": "ws_1", "status": "completed"}]),
        "input[0].type",
    ),
    ("an item reference", responses(input=[{"type": "item_reference", "id": "msg_1"}]), "input[0].type"),
    ("logprobs", responses(include=["message.output_text.logprobs"]), "include[0]"),
    (
        "an image given as a file id",
        responses(
            input=[
                {"role": "user", "content": [{"type": "input_image", "file_id": "file-1", "detail": "auto"}]}
            ]
        ),
        "input[0].content[0].file_id",
    ),
    (
        "a file given by URL",
        responses(
            input=[{"role": "user", "content": [{"type": "input_file", "file_url": "https://x.test/a.pdf"}]}]
        ),
        "input[0].content[0].file_url",
    ),
    (
        "an image as a function output",
        responses(
            input=[
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "c",
                    "output": [{"type": "input_image", "image_url": PNG_URI}],
                },
            ]
        ),
        "input[1].output[0]",
    ),
    ("a reusable prompt", responses(prompt={"id": "pmpt_1"}), "prompt"),
    ("context management", responses(context_management=[{"type": "compaction"}]), "context_management"),
    ("moderation", responses(moderation={"model": "omni-moderation-latest"}), "moderation"),
    ("a hosted tool choice", responses(tools=[WEATHER], tool_choice={"type": "web_search"}), "tool_choice"),
]


@pytest.mark.parametrize(("body", "param"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_what_a_chat_request_cannot_carry_is_refused_by_name(body: dict[str, Any], param: str) -> None:
    for translator in (ANTHROPIC, GEMINI, XAI):
        err = refused(body, translator)
        assert (err.code, err.param) == ("unsupported_parameter", param)


def test_a_chat_side_refusal_names_the_responses_item() -> None:
    """Anthropic takes PDFs and text documents only: the chat pair refuses a zip file as
    ``messages[1]...``, which the client wrote as ``input[0]`` (after the instructions)."""
    zipped = {"type": "input_file", "filename": "a.zip", "file_data": f"data:application/zip;base64,{PDF}"}
    err = refused(responses(instructions="x", input=[{"role": "user", "content": [zipped]}]))
    assert err.code == "unsupported_parameter" and err.param == "input[0]"


@pytest.mark.parametrize(
    ("chat", "expected"),
    [
        (None, None),
        ("messages", "input"),
        ("messages[2].content[0]", "input"),  # without origins
        ("max_completion_tokens", "max_output_tokens"),
        ("max_tokens", "max_output_tokens"),
        ("response_format", "text.format"),
        ("response_format.json_schema.schema", "text.format.schema"),
        ("tools[1].function.parameters", "tools[1].parameters"),
        ("tool_choice.function.name", "tool_choice.name"),
        ("reasoning_effort", "reasoning.effort"),
        ("temperature", "temperature"),
    ],
)
def test_chat_parameters_are_named_as_the_responses_request_names_them(
    chat: str | None, expected: str
) -> None:
    assert responses_param(chat) == expected


def test_message_errors_name_the_item_they_came_from() -> None:
    assert responses_param("messages[1].content[0].image_url", ["instructions", "input[0]"]) == "input[0]"
    assert responses_param("messages.0", ["instructions", "input[0]"]) == "instructions"
