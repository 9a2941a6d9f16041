"""The Anthropic simulator speaks the Messages API wire format and rejects what Anthropic rejects."""

from __future__ import annotations

import anthropic
import orjson
import pytest
from sim_checks import KEYS, Checks, post, sse_data

import simulators
from simulators.testing import SimulatorProcess

BODY = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 256,
    "messages": [{"role": "user", "content": "Tell me something nice"}],
}
WEATHER = {
    "name": "get_weather",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["location", "days"],
    },
}
CLOCK = {
    "name": "get_time",
    "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
}


def _message(sim: SimulatorProcess, checks: Checks, **extra: object) -> dict:
    body = {**BODY, **extra}
    response = post(sim, "/v1/messages", body)
    assert response.status_code == 200, response.text
    checks.provider("anthropic-response", response.content)
    doc = response.json()
    expected = simulators.expected_usage("anthropic", body)
    assert doc["usage"] == expected
    return doc


def _stream(sim: SimulatorProcess, checks: Checks, **extra: object) -> list[dict]:
    response = post(sim, "/v1/messages", {**BODY, **extra, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    checks.provider("anthropic-sse", response.text)
    events = response.text.split("\n\n")
    assert all(e.startswith("event: ") for e in events if e)
    return [orjson.loads(d) for d in sse_data(response.text)]


def test_message_non_stream(anthropic_sim, checks):
    doc = _message(anthropic_sim, checks)
    assert doc["content"] == [{"type": "text", "text": "Hello! You said: Tell me something nice."}]
    assert doc["stop_reason"] == "end_turn" and doc["id"].startswith("msg_")
    assert doc["usage"]["input_tokens"] == 4 + 3 and doc["usage"]["output_tokens"] == 7
    assert doc["usage"]["cache_read_input_tokens"] == 0 and doc["usage"]["cache_creation_input_tokens"] == 0


def test_message_stream(anthropic_sim, checks):
    events = _stream(anthropic_sim, checks)
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == "Hello! You said: Tell me something nice."
    assert kinds.count("content_block_delta") >= 6
    delta = events[-2]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == 7 and delta["usage"]["input_tokens"] == 7


def test_sdk_stream(anthropic_sim):
    client = anthropic.Anthropic(api_key=KEYS["anthropic"], base_url=anthropic_sim.base_url, max_retries=0)
    with client.messages.stream(**BODY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello! You said: Tell me something nice."
    assert final.usage.output_tokens == 7


@pytest.mark.parametrize(
    ("headers", "status", "kind"),
    [
        ({"anthropic-version": "2023-06-01"}, 401, "authentication_error"),
        ({"x-api-key": "sk-ant-wrong", "anthropic-version": "2023-06-01"}, 401, "authentication_error"),
        ({"x-api-key": KEYS["anthropic"]}, 400, "invalid_request_error"),
        ({"authorization": f"Bearer {KEYS['anthropic']}", "anthropic-version": "2023-06-01"}, 200, None),
    ],
)
def test_auth(anthropic_sim, checks, headers, status, kind):
    response = post(anthropic_sim, "/v1/messages", BODY, headers, auth=False)
    assert response.status_code == status, response.text
    checks.provider("anthropic-response", response.content)
    if kind:
        assert response.json()["type"] == "error" and response.json()["error"]["type"] == kind


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        ({"n": 2}, "'n'"),
        ({"max_tokens": None}, "max_tokens"),
        ({"tool_choice": "auto", "tools": [WEATHER]}, "tool_choice"),
        ({"messages": [{"role": "user", "content": ""}]}, "empty content"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "x"}],
                    }
                ]
            },
            "toolu_9",
        ),
    ],
)
def test_invalid_bodies_are_rejected(anthropic_sim, checks, change, mentions):
    body = {k: v for k, v in {**BODY, **change}.items() if v is not None}
    response = post(anthropic_sim, "/v1/messages", body)
    assert response.status_code == 400, response.text
    checks.provider("anthropic-response", response.content)
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and mentions in error["message"], error


def test_forced_tool_use_has_no_preamble(anthropic_sim, checks):
    doc = _message(anthropic_sim, checks, tools=[WEATHER, CLOCK], tool_choice={"type": "any"})
    assert [b["type"] for b in doc["content"]] == ["tool_use"]
    assert doc["content"][0]["input"] == {"location": "x", "days": 1} and doc["stop_reason"] == "tool_use"
    doc = _message(
        anthropic_sim, checks, tools=[WEATHER, CLOCK], tool_choice={"type": "tool", "name": "get_time"}
    )
    assert [(b["name"], b["input"]) for b in doc["content"]] == [("get_time", {"zone": "x"})]


def test_weather_tool_use_after_a_sentence(anthropic_sim, checks):
    messages = [{"role": "user", "content": "weather in Paris, in parallel"}]
    doc = _message(anthropic_sim, checks, messages=messages, tools=[WEATHER, CLOCK])
    assert [b["type"] for b in doc["content"]] == ["text", "tool_use", "tool_use"]
    assert [b.get("name") for b in doc["content"][1:]] == ["get_weather", "get_time"]
    doc = _message(
        anthropic_sim,
        checks,
        messages=messages,
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    )
    assert [b["type"] for b in doc["content"]] == ["text", "tool_use"]


def test_streamed_tool_use_sends_json_fragments(anthropic_sim, checks):
    events = _stream(anthropic_sim, checks, tools=[WEATHER], tool_choice={"type": "any"})
    start = next(e for e in events if e["type"] == "content_block_start")
    assert start["content_block"]["type"] == "tool_use" and start["content_block"]["input"] == {}
    fragments = [e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta"]
    assert len([f for f in fragments if f]) >= 2
    assert orjson.loads("".join(fragments)) == {"location": "x", "days": 1}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_tool_result_is_quoted(anthropic_sim, checks):
    messages = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"location": "Paris", "days": 1},
                }
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C sunny"}],
        },
    ]
    doc = _message(anthropic_sim, checks, messages=messages, tools=[WEATHER])
    assert doc["content"] == [{"type": "text", "text": "The tool returned: 18C sunny"}]


def test_cache_control_reports_cache_reads(anthropic_sim, checks):
    system = [
        {"type": "text", "text": "You are a very careful assistant", "cache_control": {"type": "ephemeral"}}
    ]
    doc = _message(anthropic_sim, checks, system=system)
    assert doc["usage"]["cache_read_input_tokens"] == 6 + 3
    assert doc["usage"]["input_tokens"] == 4 + 3
    events = _stream(anthropic_sim, checks, system=system)
    assert events[0]["message"]["usage"]["cache_read_input_tokens"] == 9
    assert events[-2]["usage"]["cache_read_input_tokens"] == 9


def test_images_and_documents_are_counted(anthropic_sim, checks):
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
        },
        {"type": "text", "text": "what are these"},
    ]
    doc = _message(anthropic_sim, checks, messages=[{"role": "user", "content": content}])
    assert (
        doc["content"][0]["text"] == "Hello! You said: what are these. I saw 2 image(s). I saw 1 document(s)."
    )


def test_structured_output_and_stop_sequences(anthropic_sim, checks):
    schema = {
        "type": "object",
        "properties": {"n": {"type": "number"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    doc = _message(anthropic_sim, checks, output_config={"format": {"type": "json_schema", "schema": schema}})
    assert orjson.loads(doc["content"][0]["text"]) == {"n": 1}
    doc = _message(anthropic_sim, checks, stop_sequences=["something"])
    assert (doc["stop_reason"], doc["stop_sequence"]) == ("stop_sequence", "something")
    assert doc["content"][0]["text"] == "Hello! You said: Tell me "
    doc = _message(anthropic_sim, checks, max_tokens=2)
    assert doc["stop_reason"] == "max_tokens" and doc["usage"]["output_tokens"] == 2


def test_count_tokens(anthropic_sim):
    response = post(
        anthropic_sim, "/v1/messages/count_tokens", {"model": BODY["model"], "messages": BODY["messages"]}
    )
    assert response.json() == {"input_tokens": 7}


def test_thinking_comes_first_and_counts_as_output(anthropic_sim, checks):
    thinking = {"type": "enabled", "budget_tokens": 1024}
    doc = _message(anthropic_sim, checks, max_tokens=2048, thinking=thinking)
    first, answer = doc["content"]
    assert first["type"] == "thinking" and first["thinking"] == "Thinking about: Tell me something nice"
    assert first["signature"] and answer["text"] == "Hello! You said: Tell me something nice."
    assert doc["usage"]["output_tokens"] == 6 + 7
    events = _stream(anthropic_sim, checks, max_tokens=2048, thinking=thinking)
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta" and e["index"] == 0]
    assert "".join(d.get("thinking", "") for d in deltas) == first["thinking"]
    assert deltas[-1]["type"] == "signature_delta"


def test_sdk_accumulates_a_thinking_stream(anthropic_sim):
    client = anthropic.Anthropic(api_key=KEYS["anthropic"], base_url=anthropic_sim.url, max_retries=0)
    with client.messages.stream(
        **{**BODY, "max_tokens": 2048}, thinking={"type": "enabled", "budget_tokens": 1024}
    ) as stream:
        message = stream.get_final_message()
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].signature


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 512}}, "greater than or equal to 1024"),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 1024},
            "must be greater than",
        ),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048, "temperature": 0.5},
            "temperature",
        ),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048, "top_k": 5}, "top_k"),
        (
            {"model": "claude-sonnet-4-5-20250929", "temperature": 0.5, "top_p": 0.9},
            "cannot both be specified",
        ),
    ],
)
def test_sampling_rules_the_schema_cannot_express(anthropic_sim, checks, change, mentions):
    response = post(anthropic_sim, "/v1/messages", {**BODY, **change})
    assert response.status_code == 400, response.text
    checks.provider("anthropic-response", response.content)
    assert mentions in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({"model": BODY["model"], "messages": BODY["messages"], "max_tokens": 5}, "max_tokens: Extra inputs"),
        ({"model": BODY["model"], "messages": BODY["messages"], "stream": True}, "stream: Extra inputs"),
        ({"model": BODY["model"]}, "messages: Field required"),
        (
            {"model": BODY["model"], "messages": [{"role": "user", "content": [{"type": "txt"}]}]},
            "messages.0.content.0",
        ),
    ],
)
def test_count_tokens_takes_only_its_own_fields(anthropic_sim, checks, body, mentions):
    response = post(anthropic_sim, "/v1/messages/count_tokens", body)
    assert response.status_code == 400, response.text
    checks.provider("anthropic-response", response.content)
    assert mentions in response.json()["error"]["message"]
