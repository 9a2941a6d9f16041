"""OpenAI chat request → Gemini request; every body is checked by the Gemini (proto) validator."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from ext_proc.errors import GatewayError
from ext_proc.translators.base import Media, Target
from ext_proc.translators.chat_gemini import SKIP_SIGNATURE, ChatGemini
from tests.translators._support import (
    PDF,
    PNG,
    USER,
    Check,
    assert_gemini_request,
    chat,
    each_case,
    weather_tool,
)

FLASH = "gemini-2.5-flash"
JPEG_BYTES = b"\xff\xd8\xff\xe0fake-jpeg"
IMAGE_URL = "https://images.test/cat.jpg"
WEATHER = weather_tool(
    {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    strict=True,
)
CALLS: dict[str, Any] = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            "extra_content": {"google": {"thought_signature": "c2lnQQ=="}},
        },
        {
            "id": "call_b",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
        },
    ],
}
UNSIGNED_CALL = chat(  # a tool call made elsewhere: no thought signature
    USER,
    {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "now"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "noon"},
)
RESULTS = [
    {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 21}'},
    {"role": "tool", "tool_call_id": "call_b", "content": "cold"},
]


def target(model: str = FLASH, media: dict[str, Media] | None = None) -> Target:
    return Target("google", "/g", "AIza-test", model, media or {})


def translate(
    body: dict[str, Any], model: str = FLASH, media: dict[str, Media] | None = None
) -> dict[str, Any]:
    upstream = ChatGemini().request(body, target(model, media))
    verb = ":streamGenerateContent?alt=sse" if body.get("stream") else ":generateContent"
    assert upstream.path == f"/g/v1beta/models/{model}{verb}"
    assert upstream.headers == {"x-goog-api-key": "AIza-test", "content-type": "application/json"}
    assert_gemini_request(upstream.body)
    out: dict[str, Any] = orjson.loads(upstream.body)
    return out


CASES: list[tuple[str, dict[str, Any], str, Check]] = [
    (
        "system and developer become systemInstruction",
        chat({"role": "system", "content": "be brief"}, {"role": "developer", "content": "no emoji"}, USER),
        FLASH,
        lambda o: (
            o["systemInstruction"] == {"parts": [{"text": "be brief"}, {"text": "no emoji"}]}
            and o["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
            and "generationConfig" not in o
        ),
    ),
    (
        "roles alternate user/model, same-role turns merged",
        chat(USER, USER, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}, USER),
        FLASH,
        lambda o: (
            [c["role"] for c in o["contents"]] == ["user", "model", "user"]
            and o["contents"][1]["parts"] == [{"text": "a"}, {"text": "b"}]
        ),
    ),
    (
        "generation parameters",
        chat(
            stop="END",
            temperature=1.5,
            top_p=0.9,
            max_tokens=50,
            n=2,
            presence_penalty=0.5,
            frequency_penalty=0,
        ),
        FLASH,
        lambda o: (
            o["generationConfig"]
            == {
                "stopSequences": ["END"],
                "temperature": 1.5,
                "topP": 0.9,
                "maxOutputTokens": 50,
                "candidateCount": 2,
                "presencePenalty": 0.5,
            }
        ),
    ),
    (
        "max_completion_tokens wins; stop list",
        chat(max_tokens=50, max_completion_tokens=70, stop=["a", "b"]),
        FLASH,
        lambda o: o["generationConfig"] == {"maxOutputTokens": 70, "stopSequences": ["a", "b"]},
    ),
    (
        "seed",
        chat(seed=42),
        FLASH,
        lambda o: o["generationConfig"] == {"seed": 42},
    ),
    (
        "a 64-bit seed is folded into Gemini's int32",
        chat(seed=2**40 + 5),
        FLASH,
        lambda o: o["generationConfig"] == {"seed": 5},
    ),
    (
        "logprobs and top_logprobs",
        chat(logprobs=True, top_logprobs=3),
        FLASH,
        lambda o: o["generationConfig"] == {"responseLogprobs": True, "logprobs": 3},
    ),
    (
        "OpenAI-only options are dropped",
        chat(
            user="u",
            store=True,
            metadata={"a": "b"},
            prediction={"type": "content", "content": "x"},
            service_tier="auto",
            verbosity="low",
            prompt_cache_key="k",
            parallel_tool_calls=False,
            logprobs=False,
            top_logprobs=2,
            n=1,
            stream_options={"include_usage": True},
        ),
        FLASH,
        lambda o: set(o) == {"contents"},
    ),
    (
        "json_object",
        chat(response_format={"type": "json_object"}),
        FLASH,
        lambda o: o["generationConfig"] == {"responseMimeType": "application/json"},
    ),
    (
        "json_schema",
        chat(
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "ids",
                    "strict": True,
                    "schema": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                },
            }
        ),
        FLASH,
        lambda o: (
            o["generationConfig"]
            == {
                "responseMimeType": "application/json",
                "responseJsonSchema": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            }
        ),
    ),
    (
        "tools use parametersJsonSchema",
        chat(tools=[WEATHER, {"type": "function", "function": {"name": "now"}}]),
        FLASH,
        lambda o: (
            o["tools"]
            == [
                {
                    "functionDeclarations": [
                        {
                            "name": "get_weather",
                            "description": "Weather for a city",
                            "parametersJsonSchema": {
                                "type": "object",
                                "properties": {"city": {"type": "string"}},
                                "required": ["city"],
                                "additionalProperties": False,
                            },
                        },
                        {"name": "now"},
                    ]
                }
            ]
            and "toolConfig" not in o
        ),
    ),
    (
        "tool_choice auto",
        chat(tools=[WEATHER], tool_choice="auto"),
        FLASH,
        lambda o: o["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}},
    ),
    (
        "tool_choice none",
        chat(tools=[WEATHER], tool_choice="none"),
        FLASH,
        lambda o: o["toolConfig"] == {"functionCallingConfig": {"mode": "NONE"}},
    ),
    (
        "tool_choice required",
        chat(tools=[WEATHER], tool_choice="required"),
        FLASH,
        lambda o: o["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}},
    ),
    (
        "named tool_choice",
        chat(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}),
        FLASH,
        lambda o: (
            o["toolConfig"]
            == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
        ),
    ),
    (
        "allowed_tools",
        chat(
            tools=[WEATHER, {"type": "function", "function": {"name": "now"}}],
            tool_choice={
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "auto",
                    "tools": [{"type": "function", "function": {"name": "now"}}],
                },
            },
        ),
        FLASH,
        lambda o: (
            o["tools"] == [{"functionDeclarations": [{"name": "now"}]}]
            and o["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
        ),
    ),
    (
        "tool calls and results: names from history, signature passed back",
        chat(USER, CALLS, *RESULTS, {"role": "user", "content": "and?"}),
        FLASH,
        lambda o: (
            o["contents"][1]
            == {
                "role": "model",
                "parts": [
                    {
                        "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                        "thoughtSignature": "c2lnQQ==",
                    },
                    {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
                ],
            }
            and o["contents"][2]
            == {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                    {"functionResponse": {"name": "get_weather", "response": {"result": "cold"}}},
                    {"text": "and?"},
                ],
            }
        ),
    ),
    (
        "Gemini 3: a call without its signature gets the documented skip value",
        UNSIGNED_CALL,
        "gemini-3-pro-preview",
        lambda o: (
            o["contents"][1]["parts"]
            == [{"functionCall": {"name": "now", "args": {}}, "thoughtSignature": SKIP_SIGNATURE}]
        ),
    ),
    (
        "Gemini 2.x: no invented signature",
        UNSIGNED_CALL,
        FLASH,
        lambda o: o["contents"][1]["parts"] == [{"functionCall": {"name": "now", "args": {}}}],
    ),
    (
        "image as a data URI",
        chat(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                ],
            }
        ),
        FLASH,
        lambda o: (
            o["contents"][0]["parts"]
            == [{"text": "what?"}, {"inlineData": {"mimeType": "image/png", "data": PNG}}]
        ),
    ),
    (
        "a PDF",
        chat(
            {
                "role": "user",
                "content": [
                    {
                        "type": "file",
                        "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "a.pdf"},
                    }
                ],
            }
        ),
        FLASH,
        lambda o: o["contents"][0]["parts"] == [{"inlineData": {"mimeType": "application/pdf", "data": PDF}}],
    ),
    (
        "audio input",
        chat(
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}],
            }
        ),
        FLASH,
        lambda o: (
            o["contents"][0]["parts"] == [{"inlineData": {"mimeType": "audio/wav", "data": "UklGRg=="}}]
        ),
    ),
    (
        "reasoning_effort on 2.5 Flash",
        chat(reasoning_effort="low"),
        FLASH,
        lambda o: o["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 1024}},
    ),
    (
        "reasoning_effort none on 2.5 Pro keeps the minimum budget",
        chat(reasoning_effort="none"),
        "gemini-2.5-pro",
        lambda o: o["generationConfig"] == {"thinkingConfig": {"thinkingBudget": 128}},
    ),
    (
        "reasoning_effort is dropped on other models",
        chat(reasoning_effort="high"),
        "gemini-2.0-flash",
        lambda o: "generationConfig" not in o,
    ),
    (
        "stream",
        chat(stream=True),
        FLASH,
        lambda o: "stream" not in o,
    ),
]


@each_case(("body", "model", "check"), CASES)
def test_request(body: dict[str, Any], model: str, check: Check) -> None:
    out = translate(body, model)
    assert check(out), orjson.dumps(out).decode()


def test_https_images_come_from_fetched_media() -> None:
    body = chat(
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": IMAGE_URL}},
                {"type": "image_url", "image_url": {"url": IMAGE_URL}},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ],
        }
    )
    translator = ChatGemini()
    assert translator.media_urls(body) == [IMAGE_URL]
    out = translate(body, media={IMAGE_URL: Media("image/jpeg", JPEG_BYTES)})
    inline = {"mimeType": "image/jpeg", "data": base64.b64encode(JPEG_BYTES).decode()}
    assert out["contents"][0]["parts"][:2] == [{"inlineData": inline}, {"inlineData": inline}]


def test_unfetched_image_is_rejected() -> None:
    body = chat({"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE_URL}}]})
    with pytest.raises(GatewayError) as info:
        ChatGemini().request(body, target())
    assert (info.value.status, info.value.code, info.value.param) == (
        400,
        "invalid_image_url",
        "messages[0].content[0].image_url.url",
    )


def test_model_name_cannot_escape_the_path() -> None:
    upstream = ChatGemini().request(chat(), target("models/../../admin?x=1"))
    assert upstream.path == "/g/v1beta/models/..%2F..%2Fadmin%3Fx%3D1:generateContent"


REJECTED: list[tuple[str, dict[str, Any], str, str]] = [
    ("logit_bias", chat(logit_bias={"1": 5}), "unsupported_parameter", "logit_bias"),
    ("audio output", chat(modalities=["audio"]), "unsupported_parameter", "modalities"),
    ("web search", chat(web_search_options={}), "unsupported_parameter", "web_search_options"),
    ("legacy function_call", chat(function_call="auto"), "unsupported_parameter", "function_call"),
    (
        "custom tools",
        chat(tools=[{"type": "custom", "custom": {"name": "x"}}]),
        "unsupported_parameter",
        "tools[0]",
    ),
    (
        "file_id",
        chat({"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}),
        "unsupported_parameter",
        "messages[0].content[0].file.file_id",
    ),
    (
        "a tool result for an unknown call",
        chat(USER, {"role": "tool", "tool_call_id": "nope", "content": "x"}),
        "invalid_request",
        "messages[1].tool_call_id",
    ),
    (
        "a data URI that is not an image",
        chat(
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:text/html;base64,PGI+"}}],
            }
        ),
        "invalid_image_url",
        "messages[0].content[0].image_url.url",
    ),
    ("n below 1", chat(n=0), "invalid_request", "n"),
    ("n above Gemini's 8 candidates", chat(n=9), "unsupported_parameter", "n"),
    ("no messages", {"model": "x", "messages": []}, "invalid_request", "messages"),
]


@each_case(("body", "code", "param"), REJECTED)
def test_rejected(body: dict[str, Any], code: str, param: str) -> None:
    with pytest.raises(GatewayError) as info:
        ChatGemini().request(body, target())
    assert (info.value.status, info.value.code, info.value.param) == (400, code, param)
