"""Anthropic's Messages API through a real Envoy, with the real anthropic SDK, for every model:
an Anthropic model (passed through), an OpenAI and a Gemini model (translated through chat).

``anthropic.Anthropic(base_url=<gateway>, api_key="inf_...")``: every answer is parsed by the
SDK's typed objects (``messages.create``; ``messages.stream`` and ``get_final_message()``), every
stream is also checked event by event with the SDK's event types and Anthropic's event order,
every request the gateway sent is checked by the simulators with the provider's own validators,
and credits equal the model's price times the usage the client was told, and the usage record.
Legacy completions and moderations go through the openai SDK.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.conformance import assert_openai, openai_errors, providers
from tests.e2e.support import PRICES, SIM_KEY, Admin, Tenant, eventually, new_tenant, start_gateway
from tests.e2e.test_providers import PNG_URI

MODELS = {"anthropic": "claude-sonnet-4-5", "openai": "gpt-4o-mini", "google": "gemini-2-5-flash"}
UPSTREAM = {"anthropic": "claude-sonnet-4-5-20250929", "openai": "gpt-4o-mini", "google": "gemini-2.5-flash"}
MODEL_PRICES = {
    "anthropic": {**PRICES, "input_per_mtok": "3", "cached_input_per_mtok": "0.3", "output_per_mtok": "15"},
    "openai": {
        **PRICES,
        "input_per_mtok": "0.15",
        "cached_input_per_mtok": "0.075",
        "output_per_mtok": "0.6",
    },
    "google": {**PRICES, "input_per_mtok": "0.3", "cached_input_per_mtok": "0.03", "output_per_mtok": "2.5"},
}
INSTRUCT = "gpt-3.5-turbo-instruct"
INSTRUCT_PRICES = {**PRICES, "input_per_mtok": "1.5", "cached_input_per_mtok": None, "output_per_mtok": "2"}
MODERATION = "omni-moderation-latest"
CHAINED = "gpt-4o"  # an OpenAI model falling back to the Anthropic one
MODERATION_PRICES = {
    **PRICES,
    "input_per_mtok": "0.5",
    "cached_input_per_mtok": None,
    "output_per_mtok": None,
}
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}
PNG_B64 = PNG_URI.split(",", 1)[1]
KINDS = pytest.mark.parametrize("kind", list(MODELS))


class Env:
    def __init__(self, stack: Stack, admin: Admin, tenant: Tenant, sims: dict[str, SimulatorProcess]):
        self.stack, self.admin, self.tenant, self.sims = stack, admin, tenant, sims
        self.root = stack.base_url.removesuffix("/v1")  # Anthropic's SDK adds /v1 itself
        self.client = anthropic.Anthropic(base_url=self.root, api_key=tenant.key, max_retries=0, timeout=30)
        self.openai = tenant.client(stack, timeout=30)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with (
        SimulatorProcess("anthropic", api_key=SIM_KEY) as claude,
        SimulatorProcess("openai", api_key=SIM_KEY) as gpt,
        SimulatorProcess("google", api_key=SIM_KEY) as gemini,
    ):
        stack = start_gateway(
            Path(tmp_path_factory.mktemp("messages")), INFERY_MEDIA_ALLOWED_HOSTS=f"127.0.0.1:{gemini.port}"
        )
        try:
            admin = Admin(stack.admin_url)
            sims = {"anthropic": claude, "openai": gpt, "google": gemini}
            for kind, sim in sims.items():
                admin.provider(kind, kind, sim.base_url, SIM_KEY)
                admin.model(MODELS[kind], kind, UPSTREAM[kind], MODEL_PRICES[kind])
            admin.model(INSTRUCT, "openai", INSTRUCT, INSTRUCT_PRICES)
            admin.model(MODERATION, "openai", MODERATION, MODERATION_PRICES)
            admin.model(CHAINED, "openai", "gpt-4o", MODEL_PRICES["openai"])
            admin.call("PUT", f"/routes/{CHAINED}", {"fallbacks": [MODELS["anthropic"]], "retry_on": ["5xx"]})
            yield Env(stack, admin, new_tenant(admin, stack, "messages"), sims)
        finally:
            stack.stop()


def _credits(kind: str, usage: Any) -> Decimal:
    """Price times the usage the client was told (Anthropic's fields: input excludes cache reads)."""
    prices = MODEL_PRICES[kind]
    cached = usage.cache_read_input_tokens or 0
    return (
        usage.input_tokens * Decimal(prices["input_per_mtok"])
        + cached * Decimal(prices["cached_input_per_mtok"])
        + usage.output_tokens * Decimal(prices["output_per_mtok"])
    ) / 1_000_000


def _record(env: Env, request_id: str) -> dict[str, Any]:
    record: dict[str, Any] = eventually(lambda: env.admin.usage_record(request_id))
    return record


def _sent(env: Env, kind: str) -> dict[str, Any]:
    """The provider request the gateway made (the simulators refuse what the real APIs refuse)."""
    sent: dict[str, Any] = env.sims[kind].requests()[-1]
    return sent


def _create(env: Env, kind: str, **kwargs: Any) -> tuple[anthropic.types.Message, Decimal]:
    """One ``messages.create``: the SDK's typed Message, checked against the charge and the record."""
    env.sims[kind].clear()
    raw = env.client.messages.with_raw_response.create(model=MODELS[kind], **{"max_tokens": 256, **kwargs})
    message = raw.parse()
    assert isinstance(message, anthropic.types.Message)
    assert not providers().response("anthropic-response", raw.http_response.content)
    assert message.model == MODELS[kind] == raw.headers["x-model-used"]
    credits = Decimal(raw.headers["x-credits-used"])
    assert credits == _credits(kind, message.usage) and credits > 0
    record = _record(env, raw.headers["x-request-id"])
    assert record["endpoint"] == "/v1/messages" and Decimal(record["credits"]) == credits
    assert not record["usage_estimated"] and record["model_used"] == MODELS[kind]
    return message, credits


def _stream(env: Env, kind: str, **kwargs: Any) -> tuple[anthropic.types.Message, Decimal]:
    """One ``messages.stream``: the SDK's final message (``get_final_message()``), charged at price
    times the usage it reports, as its usage record says."""
    env.sims[kind].clear()
    with env.client.messages.stream(model=MODELS[kind], **{"max_tokens": 256, **kwargs}) as stream:
        events = list(stream)
        message = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    assert message.model == MODELS[kind]
    record = _record(env, request_id)
    credits = Decimal(record["credits"])
    assert credits == _credits(kind, message.usage) and credits > 0
    assert record["stream"] and not record["usage_estimated"] and record["error_code"] == ""
    assert (record["input_tokens"], record["output_tokens"]) == (
        message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0),
        message.usage.output_tokens,
    )
    return message, credits


def _raw_stream(env: Env, kind: str, **body: Any) -> bytes:
    """The stream's bytes as the client gets them, checked with the SDK's event types and order."""
    with env.client.messages.with_streaming_response.create(
        model=MODELS[kind], max_tokens=256, stream=True, **body
    ) as resp:
        raw = resp.read()
    problems = providers().response("anthropic-sse", raw)
    assert not problems, problems
    assert b"[DONE]" not in raw
    return raw


# ------------------------------------------------------------------------- text


@KINDS
def test_text(env: Env, kind: str):
    message, _ = _create(
        env, kind, system="You are terse.", messages=[{"role": "user", "content": "Hello there gateway"}]
    )
    (block,) = message.content
    assert block.type == "text" and block.text == "Hello! You said: Hello there gateway."
    assert message.stop_reason == "end_turn"
    sent = _sent(env, kind)
    if kind == "anthropic":  # passed through: the provider's model and key, the same body
        assert sent["path"] == "/v1/messages" and sent["body"]["model"] == UPSTREAM[kind]
        assert sent["body"]["system"] == "You are terse." and sent["body"]["max_tokens"] == 256
    elif kind == "openai":
        assert sent["path"] == "/v1/chat/completions"
        assert sent["body"]["messages"][0] == {"role": "system", "content": "You are terse."}
        assert sent["body"]["max_completion_tokens"] == 256
    else:
        assert sent["path"].endswith("/gemini-2.5-flash:generateContent")
        assert sent["body"]["systemInstruction"] == {"parts": [{"text": "You are terse."}]}


@KINDS
def test_stream(env: Env, kind: str):
    message, _ = _stream(env, kind, messages=[{"role": "user", "content": "Stream to me please"}])
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "Hello! You said: Stream to me please."  # type: ignore[union-attr]
    raw = _raw_stream(env, kind, messages=[{"role": "user", "content": "Stream to me please"}])
    last = raw.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert last.startswith(b'event: message_stop\ndata: {"type":"message_stop"')
    # The SDK's typed events: message_stop carries the charge, the same as the usage record.
    stream = env.client.messages.create(
        model=MODELS[kind],
        max_tokens=256,
        stream=True,
        messages=[{"role": "user", "content": "Stream to me please"}],
    )
    events = list(stream)
    stop = events[-1]
    assert isinstance(stop, anthropic.types.RawMessageStopEvent)
    record = _record(env, stream.response.headers["x-request-id"])
    assert Decimal(str((stop.model_extra or {})["credits_used"])) == Decimal(record["credits"]) > 0
    assert all("credits_used" not in (e.model_extra or {}) for e in events[:-1])


# ------------------------------------------------------------------------ tools


@KINDS
def test_tool_use_and_tool_result_round_trip(env: Env, kind: str):
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    first, _ = _create(env, kind, messages=[ask], tools=[WEATHER])
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"location": "x"}
    turns = [
        ask,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21C"}],
        },
    ]
    second, _ = _create(env, kind, messages=turns, tools=[WEATHER])
    assert second.stop_reason == "end_turn"
    # (Gemini's function response is an object: its simulator quotes it as JSON)
    quoted = '{"result":"sunny, 21C"}' if kind == "google" else "sunny, 21C"
    assert second.content[-1].text == f"The tool returned: {quoted}"  # type: ignore[union-attr]
    sent = _sent(env, kind)["body"]
    if kind == "openai":
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"}
    elif kind == "google":
        response = sent["contents"][-1]["parts"][0]["functionResponse"]
        assert response == {"name": "get_weather", "response": {"result": "sunny, 21C"}}


@KINDS
def test_streamed_tool_use(env: Env, kind: str):
    message, _ = _stream(
        env,
        kind,
        messages=[{"role": "user", "content": "weather in Oslo?"}],
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    (call,) = [b for b in message.content if b.type == "tool_use"]
    assert (call.name, call.input) == ("get_weather", {"location": "x"})
    assert message.stop_reason == "tool_use"


# ----------------------------------------------------------------------- images


@KINDS
def test_image(env: Env, kind: str):
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}
    text = {"type": "text", "text": "What is in this image?"}
    message, _ = _create(env, kind, messages=[{"role": "user", "content": [image, text]}])
    assert "I saw 1 image(s)." in message.content[0].text  # type: ignore[union-attr]


def test_an_image_by_url_is_fetched_for_gemini(env: Env):
    url = f"{env.sims['google'].url}/_sim/images/test.png"
    image = {"type": "image", "source": {"type": "url", "url": url}}
    message, _ = _create(
        env, "google", messages=[{"role": "user", "content": [image, {"type": "text", "text": "what?"}]}]
    )
    assert "I saw 1 image(s)." in message.content[0].text  # type: ignore[union-attr]
    part = _sent(env, "google")["body"]["contents"][0]["parts"][0]
    assert part["inlineData"]["mimeType"] == "image/png"


# --------------------------------------------------------------------- thinking


def test_thinking_passes_through_to_anthropic(env: Env):
    thinking = {"type": "enabled", "budget_tokens": 1024}
    message, _ = _stream(
        env,
        "anthropic",
        max_tokens=2048,
        thinking=thinking,
        messages=[{"role": "user", "content": "Think first"}],
    )
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].signature  # type: ignore[union-attr]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_thinking_becomes_gemini_thinking_and_its_thoughts_thinking_blocks(env: Env, stream: bool):
    """Gemini 2.5 gets the budget as given and is asked for its thought summary, which comes back
    as Anthropic thinking blocks (signature empty: only Anthropic signs); thoughts are charged."""
    thinking = {"type": "enabled", "budget_tokens": 8000}
    ask = {"max_tokens": 9000, "thinking": thinking, "messages": [{"role": "user", "content": "Think first"}]}
    message, credits = _stream(env, "google", **ask) if stream else _create(env, "google", **ask)
    config = _sent(env, "google")["body"]["generationConfig"]["thinkingConfig"]
    assert config == {"thinkingBudget": 8000, "includeThoughts": True}
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking.startswith("Thinking it over")  # type: ignore[union-attr]
    assert message.content[0].signature == ""  # type: ignore[union-attr]
    plain, plain_credits = _create(env, "google", max_tokens=9000, messages=ask["messages"])
    assert [b.type for b in plain.content] == ["text"]  # no thinking asked: no thoughts
    assert message.usage.output_tokens > plain.usage.output_tokens and credits > plain_credits


# ----------------------------------------------------------------- count_tokens


def test_count_tokens_passes_through_to_anthropic(env: Env):
    messages = [{"role": "user", "content": "Count these five words"}]
    count = env.client.messages.count_tokens(model=MODELS["anthropic"], messages=messages, system="terse")
    assert count.input_tokens == (1 + 3) + (4 + 3) and not (count.model_extra or {}).get("estimated")
    sent = _sent(env, "anthropic")
    assert sent["path"] == "/v1/messages/count_tokens" and sent["body"]["model"] == UPSTREAM["anthropic"]


@pytest.mark.parametrize("kind", ["openai", "google"])
def test_count_tokens_is_an_estimate_for_other_providers(env: Env, kind: str):
    env.sims[kind].clear()
    raw = env.client.messages.with_raw_response.count_tokens(
        model=MODELS[kind], messages=[{"role": "user", "content": "x" * 40}]
    )
    count = raw.parse()
    assert count.input_tokens == 14 and count.model_extra == {"estimated": True}
    assert raw.headers["x-credits-used"] == "0" and env.sims[kind].requests() == []  # no provider call
    record = _record(env, raw.headers["x-request-id"])
    assert record["endpoint"] == "/v1/messages/count_tokens" and record["status"] == 200


# ----------------------------------------------------------------------- errors


def test_errors_are_anthropics_with_the_gateways_code(env: Env):
    bad = anthropic.Anthropic(base_url=env.root, api_key="inf_unknown", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as auth:
        bad.messages.create(
            model=MODELS["openai"], max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert auth.value.body == {
        "type": "error",
        "error": {
            "type": "authentication_error",
            "code": "invalid_api_key",
            "message": "Incorrect, unknown or revoked API key.",
        },
    }
    with pytest.raises(anthropic.NotFoundError) as missing:
        env.client.messages.create(
            model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert missing.value.body["error"]["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as refused:
        env.client.messages.create(
            model=MODELS["openai"],
            max_tokens=5,
            messages=[{"role": "user", "content": "hi"}],
            stop_sequences=list("abcde"),
        )
    assert refused.value.body["error"]["code"] == "unsupported_parameter"  # type: ignore[index]
    for err in (auth, missing, refused):
        assert not providers().response("anthropic-response", err.value.response.content)


@KINDS
def test_a_provider_error_is_anthropics_error(env: Env, kind: str):
    env.sims[kind].script([{"status": 429}])
    with pytest.raises(anthropic.RateLimitError) as err:
        env.client.messages.create(
            model=MODELS[kind], max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    body = err.value.body
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert body["error"]["code"] == "rate_limit_exceeded"  # type: ignore[index]
    assert SIM_KEY not in err.value.response.text


LONG_STORY = " ".join(f"word{i}" for i in range(40))  # an answer of more events than the cut lets through


@KINDS
def test_a_stream_the_provider_cuts_raises_in_the_sdk_and_is_charged(env: Env, kind: str):
    env.sims[kind].script([{"action": "cut_stream", "after_chunks": 8, "chunk_delay_ms": 50}])
    received = []
    # Envoy resets the client as the provider reset it: the SDK's HTTP client raises mid-stream.
    with (
        pytest.raises((anthropic.APIError, httpx2.TransportError)),
        env.client.messages.stream(
            model=MODELS[kind], max_tokens=256, messages=[{"role": "user", "content": LONG_STORY}]
        ) as stream,
    ):
        request_id = stream.response.headers["x-request-id"]
        for event in stream:
            received.append(event)
    assert received and received[0].type == "message_start"
    record = _record(env, request_id)
    assert record["usage_estimated"] and Decimal(record["credits"]) > 0, str(record)


# ---------------------------------------------------------- keys and headers


def test_x_api_key_is_accepted_and_never_reaches_a_provider(env: Env):
    """Attack: the client's inf_ key, sent as x-api-key (Anthropic's way) or as a bearer token, and
    Anthropic's account-selecting headers, never reach any provider; the provider's key never
    comes back."""
    headers = {
        "x-api-key": env.tenant.key,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "output-128k-2025-02-19",
        "anthropic-workspace-id": "wrkspc_someone_elses",
        "content-type": "application/json",
    }
    for kind, sim in env.sims.items():
        sim.clear()
        body = {"model": MODELS[kind], "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
        for stream in (False, True):
            resp = httpx.post(
                f"{env.root}/v1/messages",
                headers=headers,
                content=orjson.dumps({**body, "stream": stream}),
                timeout=30,
            )
            assert resp.status_code == 200, resp.text
            assert SIM_KEY not in resp.text and SIM_KEY not in str(resp.headers)
            assert not any(name.startswith(("anthropic-", "openai-", "x-infery")) for name in resp.headers)
        resp = httpx.post(
            f"{env.root}/v1/messages/count_tokens",
            headers=headers,
            content=orjson.dumps({k: v for k, v in body.items() if k != "max_tokens"}),
            timeout=30,
        )
        assert resp.status_code == 200 and SIM_KEY not in resp.text
        for sent in sim.requests():
            flat = orjson.dumps(sent["headers"]).decode()
            assert env.tenant.key not in flat and "inf_" not in flat
            assert "anthropic-workspace-id" not in sent["headers"]
            if kind == "anthropic":
                assert (
                    sent["headers"]["x-api-key"] == SIM_KEY
                    and sent["headers"]["anthropic-beta"] == headers["anthropic-beta"]
                )
            else:
                assert "x-api-key" not in sent["headers"] and "anthropic-beta" not in sent["headers"]


# ------------------------------------------------------- completions, moderations


def assert_completion_chunk(chunk: dict[str, Any]) -> None:
    """A ``text_completion`` chunk as the spec says, but for what OpenAI streams and the spec's
    whole-answer schema does not allow: ``finish_reason: null`` before the last chunk, and
    ``usage: null`` in every chunk but the usage chunk (the gateway always asks for usage)."""
    gaps = ("finish_reason: None", "usage: None")
    problems = [p for p in openai_errors(chunk, "CreateCompletionResponse") if not any(g in p for g in gaps)]
    assert not problems, problems


def test_legacy_completions(env: Env):
    raw = env.openai.completions.with_raw_response.create(
        model=INSTRUCT, prompt="Say something nice", max_tokens=40
    )
    doc = orjson.loads(raw.http_response.content)
    assert_openai(doc, "CreateCompletionResponse")
    assert doc["model"] == INSTRUCT and doc["choices"][0]["text"] == "Hello! You said: Say something nice."
    usage = doc["usage"]
    credits = (
        usage["prompt_tokens"] * Decimal("1.5") + usage["completion_tokens"] * Decimal("2")
    ) / 1_000_000
    assert Decimal(raw.headers["x-credits-used"]) == credits > 0
    assert Decimal(_record(env, raw.headers["x-request-id"])["credits"]) == credits


@pytest.mark.parametrize("include_usage", [False, True])
def test_legacy_completions_streamed(env: Env, include_usage: bool):
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    with env.openai.completions.with_streaming_response.create(
        model=INSTRUCT, prompt="Stream something nice", max_tokens=40, stream=True, **options
    ) as resp:
        text = resp.read().decode()
        request_id = resp.headers["x-request-id"]
    payloads = [line[6:] for line in text.split("\n") if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    for chunk in chunks:
        assert_completion_chunk(chunk)
    last = chunks[-1]  # the last chunk before [DONE] carries the charge
    assert (
        ("usage" in last and last["choices"] == [])
        if include_usage
        else last["choices"][0]["finish_reason"] == "stop"
    )
    assert all("credits_used" not in c for c in chunks[:-1])
    record = _record(env, request_id)
    assert (
        Decimal(str(last["credits_used"])) == Decimal(record["credits"]) > 0 and not record["usage_estimated"]
    )
    assert (
        "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
        == "Hello! You said: Stream something nice."
    )
    sdk = env.openai.completions.create(
        model=INSTRUCT, prompt="Stream something nice", max_tokens=40, stream=True
    )
    assert "".join(c.choices[0].text for c in sdk if c.choices) == "Hello! You said: Stream something nice."


def test_moderations(env: Env):
    raw = env.openai.moderations.with_raw_response.create(
        model=MODERATION, input=["I will kill the lights", "cats"]
    )
    result = raw.parse()
    assert [r.flagged for r in result.results] == [True, False] and result.results[0].categories.violence
    assert_openai(orjson.loads(raw.http_response.content), "CreateModerationResponse")
    # OpenAI reports no usage: the input estimate (ceil(27 chars / 4) = 7 tokens) at the input price.
    assert Decimal(raw.headers["x-credits-used"]) == 7 * Decimal("0.5") / 1_000_000
    record = _record(env, raw.headers["x-request-id"])
    assert (
        record["usage_estimated"] and record["input_tokens"] == 7 and record["endpoint"] == "/v1/moderations"
    )


@pytest.mark.parametrize("kind", ["anthropic", "google"])
@pytest.mark.parametrize("path", ["moderations", "completions"])
def test_moderations_and_completions_are_openai_format_only(env: Env, kind: str, path: str):
    with pytest.raises(openai.BadRequestError) as err:
        if path == "moderations":
            env.openai.moderations.create(model=MODELS[kind], input="hi")
        else:
            env.openai.completions.create(model=MODELS[kind], prompt="hi")
    assert err.value.code == "unsupported_endpoint"


# ------------------------------------------------------- fallback, idempotency


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_fallback_chain_serves_a_messages_request(env: Env, stream: bool):
    """gpt-4o fails (5xx): its chain's next target, the Anthropic model, answers the same request,
    translated afresh for it (passed through), in Anthropic's shapes and at its price."""
    for sim in env.sims.values():
        sim.clear()
    env.sims["openai"].script([{"status": 500}])
    ask = {"model": CHAINED, "max_tokens": 64, "messages": [{"role": "user", "content": "Hello chain"}]}
    if stream:
        with env.client.messages.stream(**ask) as s:  # type: ignore[arg-type]
            message = s.get_final_message()
            headers = s.response.headers
    else:
        raw = env.client.messages.with_raw_response.create(**ask)  # type: ignore[arg-type]
        message, headers = raw.parse(), raw.headers
    assert (headers["x-model-used"], headers["x-fallback-from"]) == (MODELS["anthropic"], CHAINED)
    assert message.model == MODELS["anthropic"] and message.content[0].text == "Hello! You said: Hello chain."  # type: ignore[union-attr]
    assert _sent(env, "anthropic")["body"]["model"] == UPSTREAM["anthropic"]
    record = _record(env, headers["x-request-id"])
    assert record["fallback_from"] == CHAINED and Decimal(record["credits"]) == _credits(
        "anthropic", message.usage
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_an_idempotent_replay_of_a_message(env: Env, stream: bool):
    headers = {
        "x-api-key": env.tenant.key,
        "content-type": "application/json",
        "idempotency-key": f"msg-{stream}",
    }
    body = orjson.dumps(
        {
            "model": MODELS["google"],
            "max_tokens": 64,
            "stream": stream,
            "messages": [{"role": "user", "content": "once"}],
        }
    )
    first = httpx.post(f"{env.root}/v1/messages", headers=headers, content=body, timeout=30)
    env.sims["google"].clear()
    again = httpx.post(f"{env.root}/v1/messages", headers=headers, content=body, timeout=30)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
    assert env.sims["google"].requests() == []  # no second provider call
    if not stream:
        assert again.headers["x-credits-used"] == first.headers["x-credits-used"]


# ------------------------------------------------------------------------ models


def test_models_list_their_endpoints(env: Env):
    listed = {m.id: (m.model_extra or {}).get("endpoints") for m in env.openai.models.list()}
    assert "/v1/messages" in listed[MODELS["google"]] and "/v1/embeddings" in listed[MODELS["google"]]
    assert listed[MODELS["anthropic"]] == [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/responses",
    ]
    assert {"/v1/moderations", "/v1/completions", "/v1/messages"} <= set(listed[MODELS["openai"]])
    one = env.openai.models.retrieve(MODELS["anthropic"])
    assert (one.model_extra or {})["endpoints"] == listed[MODELS["anthropic"]]
