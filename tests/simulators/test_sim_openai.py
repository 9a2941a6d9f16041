"""The OpenAI simulator speaks OpenAI's wire format and rejects what OpenAI rejects."""

from __future__ import annotations

import base64
import struct

import httpx
import openai
import orjson
import pytest
from sim_checks import KEYS, Checks, post, sse_data

import simulators
from simulators.testing import SimulatorProcess

CHAT = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say something nice please"},
    ],
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["location", "days"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}


@pytest.fixture
def client(openai_sim: SimulatorProcess) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEYS["openai"], base_url=openai_sim.base_url, max_retries=0)


def _chat(openai_sim: SimulatorProcess, checks: Checks, **extra: object) -> dict:
    body = {**CHAT, **extra}
    response = post(openai_sim, "/v1/chat/completions", body)
    assert response.status_code == 200, response.text
    doc = response.json()
    checks.openai_doc(doc, "CreateChatCompletionResponse")
    assert doc["usage"] == simulators.expected_usage("openai", body)
    return doc


def test_chat_non_stream(openai_sim, checks):
    doc = _chat(openai_sim, checks)
    assert doc["object"] == "chat.completion" and doc["model"] == "gpt-4o-mini"
    assert doc["choices"][0]["message"]["content"] == "Hello! You said: Say something nice please."
    assert doc["choices"][0]["finish_reason"] == "stop"
    assert doc["usage"]["prompt_tokens"] == (3 + 3) + (4 + 3)
    assert doc["usage"]["completion_tokens"] == 7


def test_chat_stream_with_usage(openai_sim, checks):
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    response = post(openai_sim, "/v1/chat/completions", body)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("data: [DONE]\n\n") and "\n\ndata: " in response.text
    chunks = checks.openai_sse(response.text)
    *deltas, last = chunks
    assert all(c["usage"] is None and len(c["choices"]) == 1 for c in deltas)
    assert last["choices"] == [] and last["usage"] == simulators.expected_usage("openai", body)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in deltas)
    assert text == "Hello! You said: Say something nice please."
    assert len(deltas) >= 7
    assert deltas[-1]["choices"][0]["finish_reason"] == "stop"


def test_chat_stream_without_usage_has_no_usage(openai_sim, checks):
    response = post(openai_sim, "/v1/chat/completions", {**CHAT, "stream": True})
    chunks = checks.openai_sse(response.text)
    assert all("usage" not in c and c["choices"] for c in chunks)


def test_sdk_stream_and_non_stream_agree(client):
    whole = client.chat.completions.create(**CHAT)
    parts = client.chat.completions.create(**CHAT, stream=True)
    assert (
        "".join(c.choices[0].delta.content or "" for c in parts if c.choices)
        == whole.choices[0].message.content
    )


def test_bad_and_missing_key(openai_sim):
    for headers in ({"authorization": "Bearer sk-wrong-key-9999"}, {}):
        response = post(openai_sim, "/v1/chat/completions", CHAT, headers, auth=False)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
        assert set(error) == {"message", "type", "param", "code"}
    wrong = post(
        openai_sim, "/v1/chat/completions", CHAT, {"authorization": "Bearer sk-wrong-key-9999"}, auth=False
    )
    assert "sk-wrong-key-9999" not in wrong.text


def test_sdk_sees_authentication_error(openai_sim):
    client = openai.OpenAI(api_key="nope-nope-nope", base_url=openai_sim.base_url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        client.chat.completions.create(**CHAT)
    assert err.value.code == "invalid_api_key"


@pytest.mark.parametrize(
    ("change", "param", "code"),
    [
        ({"temperature": "hot"}, "temperature", "invalid_type"),
        ({"frobnicate": 1}, None, None),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "invalid_value"),
        ({"model": None}, "model", "missing_required_parameter"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
        ({"tool_choice": "required"}, "tool_choice", None),
        ({"response_format": {"type": "json_object"}}, "messages", None),
        (
            {"messages": [{"role": "tool", "tool_call_id": "call_1", "content": "18C"}]},
            "messages.[0].role",
            None,
        ),
    ],
)
def test_invalid_bodies_are_rejected(openai_sim, checks, change, param, code):
    body = {**CHAT, **change}
    body = {k: v for k, v in body.items() if v is not None}
    response = post(openai_sim, "/v1/chat/completions", body)
    assert response.status_code == 400, response.text
    checks.openai_doc(response.json(), "ErrorResponse")
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error"), error


def test_invalid_json(openai_sim):
    response = post(openai_sim, "/v1/chat/completions", b"{not json")
    assert response.status_code == 400
    assert "parse the JSON body" in response.json()["error"]["message"]


def test_weather_asks_for_a_tool_call(openai_sim, checks):
    messages = [{"role": "user", "content": "What's the weather in Paris?"}]
    doc = _chat(openai_sim, checks, messages=messages, tools=[WEATHER_TOOL, TIME_TOOL])
    choice = doc["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"location": "x", "days": 1}


@pytest.mark.parametrize(
    ("choice", "text", "names"),
    [
        ("required", "hello", ["get_weather"]),
        ({"type": "function", "function": {"name": "get_time"}}, "hello", ["get_time"]),
        ("auto", "weather in parallel please", ["get_weather", "get_time"]),
        ("none", "weather", []),
    ],
)
def test_tool_choice(openai_sim, checks, choice, text, names):
    doc = _chat(
        openai_sim,
        checks,
        messages=[{"role": "user", "content": text}],
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice=choice,
    )
    calls = doc["choices"][0]["message"].get("tool_calls") or []
    assert [c["function"]["name"] for c in calls] == names


def test_tool_result_is_quoted(openai_sim, checks):
    messages = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
    ]
    doc = _chat(openai_sim, checks, messages=messages, tools=[WEATHER_TOOL])
    assert doc["choices"][0]["message"]["content"] == "The tool returned: 18C and sunny"


def test_streamed_tool_call_arguments_arrive_in_fragments(openai_sim, checks):
    body = {**CHAT, "stream": True, "tools": [WEATHER_TOOL], "tool_choice": "required"}
    chunks = checks.openai_sse(post(openai_sim, "/v1/chat/completions", body).text)
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls") or []]
    assert calls[0]["id"].startswith("call_") and calls[0]["function"]["name"] == "get_weather"
    fragments = [tc["function"]["arguments"] for tc in calls]
    assert len([f for f in fragments if f]) >= 2
    assert orjson.loads("".join(fragments)) == {"location": "x", "days": 1}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_json_schema_and_json_object(openai_sim, checks):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "ok": {"type": "boolean"}},
        "required": ["city", "ok"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    doc = _chat(openai_sim, checks, response_format=fmt)
    assert orjson.loads(doc["choices"][0]["message"]["content"]) == {"city": "x", "ok": True}
    messages = [{"role": "user", "content": "answer in json"}]
    doc = _chat(openai_sim, checks, messages=messages, response_format={"type": "json_object"})
    assert orjson.loads(doc["choices"][0]["message"]["content"]) == {
        "reply": "Hello! You said: answer in json."
    }


def test_images_and_files_are_counted(openai_sim, checks):
    parts = [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
    ]
    doc = _chat(openai_sim, checks, messages=[{"role": "user", "content": parts}])
    assert (
        doc["choices"][0]["message"]["content"]
        == "Hello! You said: look. I saw 2 image(s). I saw 1 document(s)."
    )


def test_max_tokens_n_and_stop(openai_sim, checks):
    doc = _chat(openai_sim, checks, max_completion_tokens=3)
    assert doc["choices"][0]["finish_reason"] == "length" and doc["usage"]["completion_tokens"] == 3
    doc = _chat(openai_sim, checks, n=2, stop=["nice"])
    assert [c["message"]["content"] for c in doc["choices"]] == ["Hello! You said: Say something "] * 2
    assert doc["usage"]["completion_tokens"] == 2 * 5


def test_embeddings_float_and_base64(openai_sim, checks):
    body = {"model": "text-embedding-3-small", "input": ["hello world", "bye"], "dimensions": 16}
    floats = post(openai_sim, "/v1/embeddings", body).json()
    checks.openai_doc(floats, "CreateEmbeddingResponse")
    assert floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert [len(d["embedding"]) for d in floats["data"]] == [16, 16]
    # The spec types `embedding` as a float array only; base64 strings are what the real API sends.
    encoded = post(openai_sim, "/v1/embeddings", {**body, "encoding_format": "base64"}).json()
    assert encoded["usage"] == floats["usage"]
    for as_float, as_b64 in zip(floats["data"], encoded["data"], strict=True):
        decoded = struct.unpack("<16f", base64.b64decode(as_b64["embedding"]))
        assert all(abs(a - b) < 1e-6 for a, b in zip(decoded, as_float["embedding"], strict=True))
    default = post(
        openai_sim, "/v1/embeddings", {"model": "text-embedding-3-small", "input": "hello world"}
    ).json()
    assert len(default["data"][0]["embedding"]) == 1536
    assert default["data"][0]["embedding"][:16] != floats["data"][1]["embedding"]


def test_images_b64_and_url(openai_sim, checks):
    doc = post(
        openai_sim,
        "/v1/images/generations",
        {"model": "dall-e-3", "prompt": "a cat", "n": 2, "response_format": "b64_json"},
    ).json()
    checks.openai_doc(doc, "ImagesResponse")
    assert len(doc["data"]) == 2
    assert all(base64.b64decode(d["b64_json"]).startswith(b"\x89PNG") for d in doc["data"])
    doc = post(openai_sim, "/v1/images/generations", {"model": "dall-e-3", "prompt": "a cat"}).json()
    checks.openai_doc(doc, "ImagesResponse")
    image = httpx.get(doc["data"][0]["url"])
    assert image.headers["content-type"] == "image/png" and image.content.startswith(b"\x89PNG")
    doc = post(openai_sim, "/v1/images/generations", {"model": "gpt-image-1", "prompt": "a red cat"}).json()
    checks.openai_doc(doc, "ImagesResponse")
    assert doc["usage"]["input_tokens"] == 3 and "b64_json" in doc["data"][0]


def test_models(client, openai_sim, checks):
    listing = httpx.get(
        openai_sim.base_url + "/models", headers={"authorization": f"Bearer {KEYS['openai']}"}
    )
    checks.openai_doc(listing.json(), "ListModelsResponse")
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_unknown_path_is_openai_404(openai_sim):
    response = post(openai_sim, "/v1/nope", {})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/nope)"


async def test_in_process_app():
    app = simulators.app("openai", api_key="k", validate=False, chunk_delay_ms=0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        response = await client.post(
            "/v1/chat/completions", json={**CHAT, "extra_field": 1}, headers={"authorization": "Bearer k"}
        )
        assert response.status_code == 200  # validation off: unknown fields pass
        assert (await client.get("/_sim/requests")).json()[0]["body"]["extra_field"] == 1


# ---------------------------------------------------------------- legacy completions, moderations
COMPLETION = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say something nice please", "max_tokens": 50}


def test_completion_non_stream(openai_sim, checks):
    response = post(openai_sim, "/v1/completions", COMPLETION)
    assert response.status_code == 200, response.text
    doc = response.json()
    checks.openai_doc(doc, "CreateCompletionResponse")
    assert doc["object"] == "text_completion" and doc["id"].startswith("cmpl-")
    assert doc["choices"][0]["text"] == "Hello! You said: Say something nice please."
    assert doc["usage"] == simulators.expected_usage("openai", COMPLETION, "/v1/completions")
    assert doc["usage"] == {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}


def test_completion_defaults_to_16_tokens_and_counts_every_answer(openai_sim, checks):
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": ["one " * 30, "two"], "n": 2, "echo": True}
    doc = post(openai_sim, "/v1/completions", body).json()
    checks.openai_doc(doc, "CreateCompletionResponse")
    assert [c["index"] for c in doc["choices"]] == [0, 1, 2, 3]
    assert doc["choices"][0]["finish_reason"] == "length" and doc["choices"][2]["finish_reason"] == "stop"
    assert doc["choices"][2]["text"] == "twoHello! You said: two."  # echo: the prompt first
    assert doc["usage"] == simulators.expected_usage("openai", body, "/v1/completions")
    assert doc["usage"]["completion_tokens"] == 2 * 16 + 2 * 4


def test_completion_stream(openai_sim, checks, client):
    body = {**COMPLETION, "stream": True, "stream_options": {"include_usage": True}}
    response = post(openai_sim, "/v1/completions", body)
    payloads = sse_data(response.text)
    assert payloads[-1] == "[DONE]"
    *chunks, last = [orjson.loads(p) for p in payloads[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "Hello! You said: Say something nice please."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert last["choices"] == [] and last["usage"] == simulators.expected_usage(
        "openai", body, "/v1/completions"
    )
    checks.openai_doc(last, "CreateCompletionResponse")
    streamed = client.completions.create(**COMPLETION, stream=True)
    assert (
        "".join(c.choices[0].text for c in streamed if c.choices)
        == "Hello! You said: Say something nice please."
    )


@pytest.mark.parametrize(
    ("change", "status", "mentions"),
    [
        ({"model": "gpt-4o-mini"}, 404, "chat model"),
        ({"prompt": None}, 400, "prompt"),
        ({"max_tokens": "x"}, 400, "max_tokens"),
        ({"stream_options": {"include_usage": True}}, 400, "stream_options"),
    ],
)
def test_completion_refusals(openai_sim, change, status, mentions):
    body = {k: v for k, v in {**COMPLETION, **change}.items() if v is not None}
    response = post(openai_sim, "/v1/completions", body)
    assert response.status_code == status, response.text
    assert mentions in response.text


def test_moderation(openai_sim, checks, client):
    response = post(openai_sim, "/v1/moderations", {"input": ["I will kill the lights", "I like cats"]})
    assert response.status_code == 200, response.text
    doc = response.json()
    checks.openai_doc(doc, "CreateModerationResponse")
    assert doc["model"] == "omni-moderation-2024-09-26" and doc["id"].startswith("modr-")
    assert [r["flagged"] for r in doc["results"]] == [True, False]
    assert doc["results"][0]["categories"]["violence"] is True
    image = {"type": "image_url", "image_url": {"url": "https://images.test/a.png"}}
    parts = client.moderations.create(
        model="omni-moderation-latest", input=[{"type": "text", "text": "hi"}, image]
    )
    assert len(parts.results) == 1 and parts.results[0].category_applied_input_types.violence == [
        "text",
        "image",
    ]


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({}, "input"),
        ({"input": 5}, "input"),
        (
            {
                "input": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}],
                "model": "text-moderation-latest",
            },
            "image",
        ),
    ],
)
def test_moderation_refusals(openai_sim, body, mentions):
    response = post(openai_sim, "/v1/moderations", body)
    assert response.status_code == 400, response.text
    assert mentions in response.text
