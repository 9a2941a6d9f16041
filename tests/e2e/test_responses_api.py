"""The Responses API through Envoy and ext_proc, with the openai SDK, for an OpenAI, an Anthropic and
a Gemini model: passed through to OpenAI, translated for the others.

The simulators reject any request the real API would (the OpenAI one validates
``/v1/responses`` against OpenAI's spec); the request the gateway sent is checked again with
the provider's own types; every answer and every streamed event the client gets is checked
against OpenAI's spec; credits equal price times the provider's usage, and the usage record.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from infery.stack import Stack
from simulators.conformance import iter_sse
from simulators.testing import SimulatorProcess
from tests.conformance import assert_openai, providers
from tests.e2e.support import PRICES, SIM_KEY, Admin, Tenant, eventually, new_tenant

MODELS = ("gpt-4o-mini", "claude-sonnet-4-5", "gemini-2-5-flash")
EACH_MODEL = pytest.mark.parametrize("model", MODELS)
STREAMED = pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
MILLION = Decimal(1_000_000)
WEATHER = {  # OpenAI's spec (and the SDK's FunctionToolParam) require strict and parameters
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "number"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
PNG_URI = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVQImWNwav0CAALIAbzDqqRyAAAAAElFTkSuQmCC"
)


@pytest.fixture(scope="module")
def responder(admin: Admin, gateway: Stack, three_formats: dict[str, SimulatorProcess]) -> Tenant:
    return new_tenant(admin, gateway, "responses")


@pytest.fixture
def client(responder: Tenant, gateway: Stack) -> openai.OpenAI:
    return responder.client(gateway, timeout=30)


def expected_credits(usage: dict[str, Any]) -> Decimal:
    cached = usage["input_tokens_details"]["cached_tokens"]
    return (
        (usage["input_tokens"] - cached) * Decimal(PRICES["input_per_mtok"])
        + cached * Decimal(PRICES["cached_input_per_mtok"])
        + usage["output_tokens"] * Decimal(PRICES["output_per_mtok"])
    ) / MILLION


def check_sent(sim: SimulatorProcess, model: str) -> dict[str, Any]:
    """The request the gateway sent the provider, checked with the provider's own types (the
    OpenAI simulator checks its requests against OpenAI's spec itself)."""
    sent = sim.requests()[-1]
    if model.startswith("gpt"):
        assert sent["path"] == "/v1/responses"  # OpenAI: passed through
        return sent
    if sim.kind == "openai":
        return sent
    checks = providers()
    check = checks.anthropic_request if model.startswith("claude") else checks.gemini_request
    problems = check(sent["body"])
    assert not problems, f"the gateway sent an invalid request: {problems} {sent['body']}"
    return sent


class Answer:
    """One Responses call as the client saw it: the final response object, the charge, the
    request id; and every event, checked, when it was streamed."""

    def __init__(self, doc: dict[str, Any], credits: Decimal, request_id: str, events: list[dict[str, Any]]):
        self.doc, self.credits, self.request_id, self.events = doc, credits, request_id, events

    @property
    def output_text(self) -> str:
        return "".join(
            part["text"]
            for item in self.doc["output"]
            if item["type"] == "message"
            for part in item["content"]
            if part["type"] == "output_text"
        )

    def calls(self) -> list[dict[str, Any]]:
        return [item for item in self.doc["output"] if item["type"] == "function_call"]


def create(
    client: openai.OpenAI, sims: dict[str, SimulatorProcess], model: str, stream: bool, **params: Any
) -> Answer:
    sim = sims[model]
    sim.clear()
    if not stream:
        raw = client.responses.with_raw_response.create(model=model, **params)
        doc = json.loads(raw.http_response.content)
        assert_openai(doc, "Response")
        assert raw.headers["x-model-used"] == model and doc["model"] == model
        raw.parse()  # the SDK's own types read it
        check_sent(sim, model)
        return Answer(doc, Decimal(raw.headers["x-credits-used"]), raw.headers["x-request-id"], [])
    with client.responses.with_streaming_response.create(model=model, stream=True, **params) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        request_id = resp.headers["x-request-id"]
        text = resp.read().decode()
    events = []
    for name, data in iter_sse(text):
        event = json.loads(data)
        assert name == event["type"], "every event is named after its type"
        assert_openai(event, "ResponseStreamEvent")
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "[DONE]" not in text
    assert events[0]["type"] == "response.created" and events[1]["type"] == "response.in_progress"
    last = events[-1]
    assert last["type"] == "response.completed", last
    response = last["response"]
    credits = Decimal(text.rsplit('"credits_used":', 1)[1].split("}", 1)[0])
    assert response["credits_used"] == float(credits)
    assert {e["response"]["model"] for e in events if "response" in e} == {model}
    check_sent(sim, model)
    return Answer(response, credits, request_id, events)


@EACH_MODEL
@STREAMED
def test_text_is_answered_and_charged_as_the_usage_record(
    client: openai.OpenAI,
    admin: Admin,
    responder: Tenant,
    three_formats: dict[str, SimulatorProcess],
    model: str,
    stream: bool,
):
    answer = create(
        client, three_formats, model, stream, input="Say hello to the gateway", instructions="Be brief."
    )
    assert "Hello" in answer.output_text and answer.doc["status"] == "completed"
    assert answer.doc["instructions"] == "Be brief."
    usage = answer.doc["usage"]
    assert answer.credits == expected_credits(usage) and answer.credits > 0
    record = eventually(lambda: admin.usage_record(answer.request_id))
    assert Decimal(record["credits"]) == answer.credits
    assert (record["input_tokens"], record["output_tokens"]) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )
    assert (record["endpoint"], record["model_used"], record["stream"], record["status"]) == (
        "/v1/responses",
        model,
        stream,
        200,
    )
    assert record["key_id"] == responder.key_id and not record["usage_estimated"]


@EACH_MODEL
@STREAMED
def test_a_tool_round_trip_with_function_call_output(
    client: openai.OpenAI, three_formats: dict[str, SimulatorProcess], model: str, stream: bool
):
    first = create(
        client, three_formats, model, stream, input="What is the weather in Paris?", tools=[WEATHER]
    )
    calls = first.calls()
    assert len(calls) == 1 and calls[0]["name"] == "get_weather"
    call = calls[0]
    assert json.loads(call["arguments"]) == {"city": "x"}
    second = create(
        client,
        three_formats,
        model,
        stream,
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            *[item for item in first.doc["output"] if item["type"] in ("message", "function_call")],
            {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny and 21C"},
        ],
        tools=[WEATHER],
    )
    assert "sunny and 21C" in second.output_text and not second.calls()


@EACH_MODEL
@STREAMED
def test_a_json_schema_answer(
    client: openai.OpenAI, three_formats: dict[str, SimulatorProcess], model: str, stream: bool
):
    answer = create(
        client,
        three_formats,
        model,
        stream,
        input="Describe a person",
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}},
    )
    assert set(json.loads(answer.output_text)) == {"name", "age"}
    assert answer.doc["text"]["format"]["type"] == "json_schema"


@EACH_MODEL
def test_an_image_input(client: openai.OpenAI, three_formats: dict[str, SimulatorProcess], model: str):
    answer = create(
        client,
        three_formats,
        model,
        False,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is in this image?"},
                    {"type": "input_image", "image_url": PNG_URI, "detail": "auto"},
                ],
            }
        ],
    )
    assert "I saw 1 image(s)." in answer.output_text


@EACH_MODEL
def test_parameters_reach_the_provider(
    client: openai.OpenAI, three_formats: dict[str, SimulatorProcess], model: str
):
    answer = create(
        client,
        three_formats,
        model,
        False,
        input="Say hello",
        max_output_tokens=64,
        temperature=0.5,
        top_p=0.9,
        parallel_tool_calls=False,
        metadata={"team": "core"},
        user="end-user-1",
        tools=[WEATHER],
        tool_choice="auto",
        reasoning={"effort": "low"} if model.startswith("gemini") else None,
    )
    doc = answer.doc
    assert (doc["max_output_tokens"], doc["temperature"], doc["metadata"]) == (64, 0.5, {"team": "core"})
    sent = three_formats[model].requests()[-1]["body"]
    if model.startswith("gpt"):
        assert (
            sent["model"] == "gpt-4o-mini" and sent["metadata"] == {"team": "core"} and sent["top_p"] == 0.9
        )
    elif model.startswith("claude"):
        assert (sent["max_tokens"], sent["temperature"], sent["metadata"]) == (
            64,
            0.5,
            {"user_id": "end-user-1"},
        )
        assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    else:
        config = sent["generationConfig"]
        assert (config["maxOutputTokens"], config["temperature"], config["topP"]) == (64, 0.5, 0.9)
        assert config["thinkingConfig"] == {"thinkingBudget": 1024}


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gemini-2-5-flash"])
def test_what_a_provider_cannot_honour_is_refused_by_name(
    client: openai.OpenAI, three_formats: dict[str, SimulatorProcess], model: str
):
    three_formats[model].clear()
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=model, input="hi", tools=[{"type": "web_search"}])
    assert (info.value.code, info.value.param) == ("unsupported_parameter", "tools[0]")
    assert three_formats[model].requests() == []  # refused before any upstream call


@EACH_MODEL
def test_openais_refusals_for_every_provider(client: openai.OpenAI, model: str):
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=model, input="hi", max_output_tokens=8)
    assert (info.value.code, info.value.param) == ("invalid_value", "max_output_tokens")
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=model, input="hi", background=True)
    assert (info.value.code, info.value.param) == ("unsupported_parameter", "background")


def test_the_streams_final_response_reaches_the_sdk_helper(
    client: openai.OpenAI, three_formats: dict[str, SimulatorProcess]
):
    for model in MODELS:
        with client.responses.stream(
            model=model, input="What is the weather in Paris?", tools=[WEATHER]
        ) as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_response()
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        assert final.output[-1].type == "function_call" and final.output[-1].name == "get_weather"
        assert final.model == model


def test_a_broken_stream_ends_with_an_error_event_the_sdk_raises_and_is_charged(
    gateway: Stack, responder: Tenant, admin: Admin, three_formats: dict[str, SimulatorProcess]
):
    """An event over INFERY_MAX_SSE_EVENT_BYTES: the gateway ends the stream with its own
    ``error`` event, numbered after the last one sent, carrying the charge of what was served."""
    claude = three_formats["claude-sonnet-4-5"]
    claude.script(
        [{"action": "endless_event", "after_chunks": 4, "size": 8 * 1024 * 1024, "chunk_delay_ms": 5}]
    )
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/responses",
        json={"model": "claude-sonnet-4-5", "input": "Say hello to everyone in the room", "stream": True},
        headers={"authorization": f"Bearer {responder.key}"},
        timeout=60,
    ) as resp:
        assert resp.status_code == 200
        request_id = resp.headers["x-request-id"]
        text = resp.read().decode()
    events = [json.loads(data) for _, data in iter_sse(text)]
    for event in events:
        assert_openai(event, "ResponseStreamEvent")
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "response.output_text.delta" in [e["type"] for e in events]
    last = events[-1]
    assert (last["type"], last["code"], last["error"]["code"]) == (
        "error",
        "upstream_error",
        "upstream_error",
    )
    assert "stream event over" in last["message"]
    record = eventually(lambda: admin.usage_record(request_id))
    assert Decimal(record["credits"]) == Decimal(text.rsplit('"credits_used":', 1)[1].split("}", 1)[0]) > 0
    assert record["error_code"] == "upstream_error" and record["usage_estimated"]

    claude.script(
        [{"action": "endless_event", "after_chunks": 4, "size": 8 * 1024 * 1024, "chunk_delay_ms": 5}]
    )
    client = responder.client(gateway, timeout=60)
    with (  # the SDK raises the error event
        pytest.raises(openai.APIError) as info,
        client.responses.stream(model="claude-sonnet-4-5", input="Say hello to everyone") as stream,
    ):
        for _ in stream:
            pass
    assert info.value.code == "upstream_error"


def test_a_stream_the_provider_cuts_is_charged_for_what_was_served(
    gateway: Stack, responder: Tenant, admin: Admin, three_formats: dict[str, SimulatorProcess]
):
    three_formats["gemini-2-5-flash"].script(
        [{"action": "cut_stream", "after_chunks": 3, "chunk_delay_ms": 50}]
    )
    client = responder.client(gateway, timeout=30)
    stream = client.responses.create(
        model="gemini-2-5-flash", input="Say hello to everyone in the room", stream=True
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    record = eventually(lambda: admin.usage_record(stream.response.headers["x-request-id"]))
    assert record["usage_estimated"] is True and Decimal(record["credits"]) > 0


# ------------------------------------------------ fallback chains, idempotency, limits and budgets


@pytest.fixture(scope="module")
def chained(admin: Admin, three_formats: dict[str, SimulatorProcess]) -> str:
    """A model on the OpenAI simulator falling back to Claude, then Gemini."""
    admin.model("resp-primary", "sim-openai", "gpt-4o-mini")
    admin.call(
        "PUT",
        "/routes/resp-primary",
        {"fallbacks": ["claude-sonnet-4-5", "gemini-2-5-flash"], "retry_on": ["5xx"]},
    )
    return "resp-primary"


def _post(gateway: Stack, tenant: Tenant, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/responses",
        json=body,
        headers={"authorization": f"Bearer {tenant.key}", **headers},
        timeout=30,
    )


@STREAMED
def test_a_fallback_chain_serves_a_responses_request_translated_for_its_target(
    gateway: Stack,
    responder: Tenant,
    admin: Admin,
    three_formats: dict[str, SimulatorProcess],
    chained: str,
    stream: bool,
):
    openai_sim, claude = three_formats["gpt-4o-mini"], three_formats["claude-sonnet-4-5"]

    def fell_back() -> httpx.Response | None:
        openai_sim.clear()
        claude.clear()
        openai_sim.script([{"status": 503}])
        resp = _post(gateway, responder, {"model": chained, "input": "Say hello please", "stream": stream})
        return resp if resp.headers.get("x-fallback-from") == chained else None

    resp = eventually(fell_back, timeout=10)  # the route is in force within a second
    assert resp.status_code == 200 and resp.headers["x-model-used"] == "claude-sonnet-4-5"
    sent = claude.requests()[-1]
    assert sent["path"] == "/v1/messages" and "x-api-key" in sent["headers"]  # translated for Anthropic
    assert openai_sim.requests()[-1]["path"] == "/v1/responses"  # the primary got the Responses API
    if stream:
        events = [json.loads(data) for _, data in iter_sse(resp.text)]
        for event in events:
            assert_openai(event, "ResponseStreamEvent")
        doc = events[-1]["response"]
        credits = Decimal(resp.text.rsplit('"credits_used":', 1)[1].split("}", 1)[0])
    else:
        doc = resp.json()
        assert_openai(doc, "Response")
        credits = Decimal(resp.headers["x-credits-used"])
    assert doc["model"] == "claude-sonnet-4-5" and "Hello" in doc["output"][0]["content"][0]["text"]
    assert credits == expected_credits(doc["usage"])
    record = eventually(lambda: admin.usage_record(resp.headers["x-request-id"]))
    assert (record["model_requested"], record["model_used"], record["fallback_from"]) == (
        chained,
        "claude-sonnet-4-5",
        chained,
    )
    assert Decimal(record["credits"]) == credits


@STREAMED
def test_an_idempotent_replay_repeats_the_answer_without_a_call_or_a_charge(
    gateway: Stack, responder: Tenant, three_formats: dict[str, SimulatorProcess], stream: bool
):
    claude = three_formats["claude-sonnet-4-5"]
    claude.clear()
    key = "resp-" + uuid.uuid4().hex
    body = {"model": "claude-sonnet-4-5", "input": "Say hello please", "stream": stream}
    first = _post(gateway, responder, body, **{"idempotency-key": key})
    replay = _post(gateway, responder, body, **{"idempotency-key": key})
    assert first.status_code == replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true" and replay.content == first.content
    assert len(claude.requests()) == 1
    if not stream:
        assert replay.headers["x-credits-used"] == first.headers["x-credits-used"]
    other = _post(gateway, responder, {**body, "input": "something else"}, **{"idempotency-key": key})
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"


def test_rate_limits_and_budgets_hold(
    admin: Admin, gateway: Stack, three_formats: dict[str, SimulatorProcess]
):
    limited = new_tenant(admin, gateway, f"resp-rpm-{uuid.uuid4().hex[:6]}", rpm=1)
    body = {"model": "gemini-2-5-flash", "input": "hello"}
    assert _post(gateway, limited, body).status_code == 200
    refused = _post(gateway, limited, body)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.headers["x-ratelimit-limit-requests"] == "1"

    poor = new_tenant(
        admin, gateway, f"resp-budget-{uuid.uuid4().hex[:6]}", budget_credits="0.00001", budget_period="day"
    )
    statuses = []
    for _ in range(8):
        resp = _post(
            gateway, poor, {"model": "claude-sonnet-4-5", "input": "Say hello to the whole wide world"}
        )
        statuses.append(resp.status_code)
        if resp.status_code == 429:
            assert resp.json()["error"]["code"] == "insufficient_quota"
            break
    assert statuses[0] == 200 and statuses[-1] == 429, statuses


@pytest.fixture(scope="module")
def compatible(admin: Admin, three_formats: dict[str, SimulatorProcess]) -> str:
    """A model of an OpenAI-compatible server (the OpenAI simulator's chat completions)."""
    admin.provider("sim-compatible", "openai_compatible", three_formats["gpt-4o-mini"].base_url, SIM_KEY)
    admin.model("local-llama", "sim-compatible", "gpt-4o-mini")
    return "local-llama"


@STREAMED
def test_an_openai_compatible_server_gets_chat_completions(
    client: openai.OpenAI, three_formats: dict[str, SimulatorProcess], compatible: str, stream: bool
):
    """xAI and OpenAI-compatible servers are not relied on for the Responses API: the request
    reaches them as chat completions, and the answer comes back in the Responses API's shapes."""
    sim = three_formats["gpt-4o-mini"]
    sims = {**three_formats, compatible: sim}
    eventually(lambda: client.models.retrieve(compatible))
    answer = create(
        client, sims, "local-llama", stream, input="What is the weather in Paris?", tools=[WEATHER]
    )
    sent = sim.requests()[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["tools"][0]["function"]["name"] == "get_weather"
    assert answer.calls()[0]["name"] == "get_weather"
    assert answer.credits == expected_credits(answer.doc["usage"]) > 0


# ------------------------------------------------ conversation state: store and previous_response_id


def _said(sim: SimulatorProcess, model: str) -> list[str]:
    """The texts of the turns the provider received last, in order (its own request format)."""
    body = sim.requests()[-1]["body"]
    if model.startswith("gpt"):
        assert "previous_response_id" not in body  # the gateway's conversation, never OpenAI's
        turns = [item.get("content") for item in body["input"]]
    elif model.startswith("claude"):
        turns = [m["content"] for m in body["messages"]]
    else:
        turns = [c["parts"] for c in body["contents"]]
    texts = []
    for turn in turns:
        parts = turn if isinstance(turn, list) else [{"text": turn}]
        texts.append(" ".join(str(p.get("text", "")) for p in parts))
    return texts


@EACH_MODEL
@STREAMED
def test_previous_response_id_continues_the_conversation_on_every_provider(
    client: openai.OpenAI, admin: Admin, three_formats: dict[str, SimulatorProcess], model: str, stream: bool
):
    first = create(client, three_formats, model, stream, input="My name is Ada", instructions="Be brief.")
    second = create(
        client, three_formats, model, stream, input="What is my name?", previous_response_id=first.doc["id"]
    )
    said = _said(three_formats[model], model)
    assert said[0] == "My name is Ada" and first.output_text in said[1] and said[-1] == "What is my name?"
    assert len(said) == 3  # the instructions are not carried over (as OpenAI)
    assert "What is my name?" in second.output_text
    alone = create(client, three_formats, model, False, input="What is my name?")
    assert second.doc["usage"]["input_tokens"] > alone.doc["usage"]["input_tokens"]  # the history was charged
    record = eventually(lambda: admin.usage_record(second.request_id))
    assert record["input_tokens"] == second.doc["usage"]["input_tokens"]


def test_a_conversation_moves_between_providers(
    client: openai.OpenAI, three_formats: dict[str, SimulatorProcess]
):
    first = client.responses.create(model="claude-sonnet-4-5", input="My name is Ada")
    second = client.responses.create(
        model="gemini-2-5-flash", input="And yours?", previous_response_id=first.id
    )
    third = client.responses.create(model="gpt-4o-mini", input="Bye now", previous_response_id=second.id)
    assert _said(three_formats["gpt-4o-mini"], "gpt-4o-mini")[:2] == ["My name is Ada", first.output_text]
    listed = client.responses.input_items.list(third.id, order="asc")
    texts = [part.text for item in listed.data for part in item.content]  # type: ignore[union-attr]
    assert texts == ["My name is Ada", first.output_text, "And yours?", second.output_text, "Bye now"]


@EACH_MODEL
def test_a_kept_response_is_retrieved_listed_and_deleted(
    client: openai.OpenAI, gateway: Stack, responder: Tenant, model: str
):
    answer = client.responses.with_raw_response.create(
        model=model, input=[{"role": "user", "content": "Hello there"}]
    )
    created = json.loads(answer.http_response.content)
    raw = httpx.get(
        f"{gateway.base_url}/responses/{created['id']}", headers={"authorization": f"Bearer {responder.key}"}
    )
    assert raw.status_code == 200 and raw.json() == created  # as the client got it
    assert_openai(raw.json(), "Response")
    assert client.responses.retrieve(created["id"]).output_text == answer.parse().output_text
    items = httpx.get(
        f"{gateway.base_url}/responses/{created['id']}/input_items",
        headers={"authorization": f"Bearer {responder.key}"},
    ).json()
    assert_openai(items, "ResponseItemList")
    assert [i["content"][0]["text"] for i in items["data"]] == ["Hello there"]
    assert client.responses.input_items.list(created["id"]).data[0].id == items["first_id"]

    deleted = client.responses.delete(created["id"])
    assert deleted is None  # the SDK returns nothing; the gateway answered 200
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.retrieve(created["id"])
    assert info.value.code == "not_found"
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model=model, input="again", previous_response_id=created["id"])
    assert (info.value.code, info.value.param) == ("not_found", "previous_response_id")


def test_another_workspaces_response_is_not_found(
    admin: Admin, gateway: Stack, client: openai.OpenAI, three_formats: dict[str, SimulatorProcess]
):
    mine = client.responses.create(model="claude-sonnet-4-5", input="A secret of mine")
    other = new_tenant(admin, gateway, f"resp-other-{uuid.uuid4().hex[:6]}").client(gateway)
    for call in (
        lambda: other.responses.retrieve(mine.id),
        lambda: other.responses.input_items.list(mine.id),
        lambda: other.responses.delete(mine.id),
        lambda: other.responses.create(
            model="claude-sonnet-4-5", input="tell me", previous_response_id=mine.id
        ),
    ):
        with pytest.raises(openai.NotFoundError) as info:
            call()
        assert info.value.code == "not_found"
    assert client.responses.retrieve(mine.id).id == mine.id  # still there for its own workspace


def test_store_false_keeps_nothing(client: openai.OpenAI):
    unkept = client.responses.create(model="gemini-2-5-flash", input="forget this", store=False)
    assert unkept.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unkept.id)


def test_a_fallback_attempt_gets_the_kept_conversation(
    gateway: Stack,
    responder: Tenant,
    client: openai.OpenAI,
    three_formats: dict[str, SimulatorProcess],
    chained: str,
):
    """The listener puts the earlier turns in the body it forwards: each attempt of the chain
    translates that body for its own provider."""
    first = client.responses.create(model="gemini-2-5-flash", input="My name is Ada")
    openai_sim, claude = three_formats["gpt-4o-mini"], three_formats["claude-sonnet-4-5"]

    def fell_back() -> httpx.Response | None:
        openai_sim.clear()
        claude.clear()
        openai_sim.script([{"status": 503}])
        body = {"model": chained, "input": "What is my name?", "previous_response_id": first.id}
        resp = _post(gateway, responder, body)
        return resp if resp.headers.get("x-fallback-from") == chained else None

    resp = eventually(fell_back, timeout=10)
    assert resp.status_code == 200 and resp.headers["x-model-used"] == "claude-sonnet-4-5"
    assert _said(openai_sim, "gpt-4o-mini")[:2] == ["My name is Ada", first.output_text]
    assert _said(claude, "claude-sonnet-4-5") == ["My name is Ada", first.output_text, "What is my name?"]


@EACH_MODEL
def test_the_sdks_parse_helper_gets_a_typed_answer(client: openai.OpenAI, model: str):
    import pydantic

    class Person(pydantic.BaseModel):
        name: str
        age: float

    parsed = client.responses.parse(model=model, input="Describe a person", text_format=Person)
    assert isinstance(parsed.output_parsed, Person)
