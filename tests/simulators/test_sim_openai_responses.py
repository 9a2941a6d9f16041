"""The OpenAI simulator's Responses API: OpenAI's shapes and events, its refusals, kept responses."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from sim_checks import KEYS, Checks, post

import simulators
from simulators.conformance import iter_sse
from simulators.testing import SimulatorProcess

WEATHER = {  # the spec (and the SDK's FunctionToolParam) require ``strict`` and ``parameters``
    "type": "function",
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVQImWNwav0CAALIAbzDqqRyAAAAAElFTkSuQmCC"


@pytest.fixture
def client(openai_sim: SimulatorProcess) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEYS["openai"], base_url=openai_sim.base_url, max_retries=0)


def created(openai_sim: SimulatorProcess, checks: Checks, **body: Any) -> dict[str, Any]:
    response = post(openai_sim, "/v1/responses", {"model": "gpt-4o-mini", **body})
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    checks.openai_doc(doc, "Response")
    return doc


def test_a_text_answer(openai_sim, checks, client):
    body = {"model": "gpt-4o-mini", "input": "Say hello please", "instructions": "be brief"}
    doc = created(openai_sim, checks, **body)
    assert doc["status"] == "completed" and doc["model"] == "gpt-4o-mini-2024-07-18"
    assert doc["output"][0]["content"][0]["text"] == "Hello! You said: Say hello please."
    assert doc["usage"] == simulators.expected_usage("openai", body, "/v1/responses")
    assert doc["usage"]["input_tokens"] == (2 + 3) + (3 + 3)
    assert client.responses.create(**body).output_text == "Hello! You said: Say hello please."


def test_a_tool_round_trip(openai_sim, checks, client):
    first = client.responses.create(model="gpt-4o-mini", input="weather in Paris?", tools=[WEATHER])
    call = first.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "x"}
    second = client.responses.create(
        model="gpt-4o-mini",
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
        tools=[WEATHER],
    )
    assert second.output_text == "The tool returned: sunny"


def test_json_schema_and_an_image(openai_sim, checks):
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    doc = created(
        openai_sim,
        checks,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "count"},
                    {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"},
                ],
            }
        ],
        text={"format": {"type": "json_schema", "name": "count", "schema": schema, "strict": True}},
    )
    assert json.loads(doc["output"][0]["content"][0]["text"]) == {"n": 1}
    image = created(
        openai_sim,
        checks,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"}
                ],
            }
        ],
    )
    assert "I saw 1 image(s)." in image["output"][0]["content"][0]["text"]


def test_the_stream_is_openais(openai_sim, checks, client):
    response = post(
        openai_sim, "/v1/responses", {"model": "gpt-4o-mini", "input": "Say hello please", "stream": True}
    )
    events = []
    for name, data in iter_sse(response.text):
        event = json.loads(data)
        assert name == event["type"]
        checks.openai_doc(event, "ResponseStreamEvent")
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    assert "[DONE]" not in response.text
    with client.responses.stream(model="gpt-4o-mini", input="weather?", tools=[WEATHER]) as stream:
        final = stream.get_final_response()
    assert final.output[0].type == "function_call"


def test_the_output_limit_is_incomplete(openai_sim, checks):
    doc = created(
        openai_sim, checks, input="one two three four five six seven eight nine ten", max_output_tokens=16
    )
    assert doc["status"] == "completed"  # 14 words fit
    long = " ".join(["word"] * 40)
    doc = created(openai_sim, checks, input=long, max_output_tokens=16)
    assert (doc["status"], doc["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})


def test_previous_response_id_continues_a_kept_response(openai_sim, checks, client):
    first = client.responses.create(model="gpt-4o-mini", input="my name is Ada")
    second = client.responses.create(model="gpt-4o-mini", input="and yours?", previous_response_id=first.id)
    # the history counts: two earlier messages (the input, the answer) before this one
    alone = simulators.expected_usage(
        "openai", {"model": "gpt-4o-mini", "input": "and yours?"}, "/v1/responses"
    )
    assert second.usage.input_tokens > alone["input_tokens"]
    assert client.responses.retrieve(first.id).id == first.id
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="gpt-4o-mini", input="again", previous_response_id=first.id)
    assert info.value.code == "previous_response_not_found"
    unkept = client.responses.create(model="gpt-4o-mini", input="x", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unkept.id)


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"input": "x", "max_output_tokens": 8}, "invalid_value", "max_output_tokens"),
        ({"input": "x", "bogus": 1}, None, None),
        ({"input": "x", "temperature": 3}, "invalid_value", "temperature"),
        ({}, "missing_required_parameter", "input"),
        ({"input": "no word", "text": {"format": {"type": "json_object"}}}, None, "input"),
    ],
)
def test_what_openai_refuses(openai_sim, body, code, param):
    response = post(openai_sim, "/v1/responses", {"model": "gpt-4o-mini", **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
