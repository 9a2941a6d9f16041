"""Anthropic and Gemini behind the OpenAI API: every chat feature, streamed and not, through a real Envoy.

Each feature runs for each provider, non-streamed and streamed. The simulators
reject any request the real API would (simulators.conformance); the request the
gateway sent is checked again here; every response and chunk the client gets is
checked against OpenAI's spec; credits equal price * the provider's usage.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.conformance import assert_openai, assert_openai_sse, providers
from tests.e2e.support import PRICES, SIM_KEY, Admin, Tenant, new_tenant, start_gateway

MODELS = {"anthropic": "claude-sonnet-4-5", "google": "gemini-2-5-flash"}
UPSTREAM = {"anthropic": "claude-sonnet-4-5-20250929", "google": "gemini-2.5-flash"}
MODEL_PRICES = {
    "anthropic": {**PRICES, "input_per_mtok": "3", "cached_input_per_mtok": "0.3", "output_per_mtok": "15"},
    "google": {**PRICES, "input_per_mtok": "0.3", "cached_input_per_mtok": "0.03", "output_per_mtok": "2.5"},
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "number"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


PNG_URI = "data:image/png;base64," + base64.b64encode(_png()).decode()
PDF_URI = (
    "data:application/pdf;base64,"
    + base64.b64encode(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF").decode()
)


class Env:
    def __init__(self, stack: Stack, admin: Admin, tenant: Tenant, sims: dict[str, SimulatorProcess]):
        self.stack, self.admin, self.tenant, self.sims = stack, admin, tenant, sims
        self.client = tenant.client(stack, timeout=30)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with (
        SimulatorProcess("anthropic", api_key=SIM_KEY) as claude,
        SimulatorProcess("google", api_key=SIM_KEY) as gemini,
    ):
        # The Gemini simulator also serves the test images, from loopback: allowed for that host only.
        stack = start_gateway(
            Path(tmp_path_factory.mktemp("providers")), INFERY_MEDIA_ALLOWED_HOSTS=f"127.0.0.1:{gemini.port}"
        )
        try:
            admin = Admin(stack.admin_url)
            admin.provider("anthropic", "anthropic", claude.base_url, SIM_KEY)
            admin.provider("google", "google", gemini.base_url, SIM_KEY)
            for kind, slug in MODELS.items():
                admin.model(slug, kind, UPSTREAM[kind], MODEL_PRICES[kind])
            admin.model(
                "gemini-embedding-001",
                "google",
                "gemini-embedding-001",
                {**PRICES, "input_per_mtok": "0.15", "output_per_mtok": None, "cached_input_per_mtok": None},
            )
            tenant = new_tenant(admin, stack, "providers")
            yield Env(stack, admin, tenant, {"anthropic": claude, "google": gemini})
        finally:
            stack.stop()


def _credits(kind: str, usage: dict[str, Any]) -> Decimal:
    prices = MODEL_PRICES[kind]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return (
        (usage["prompt_tokens"] - cached) * Decimal(prices["input_per_mtok"])
        + cached * Decimal(prices["cached_input_per_mtok"])
        + usage["completion_tokens"] * Decimal(prices["output_per_mtok"])
    ) / 1_000_000


def _check_sent(env: Env, kind: str) -> dict[str, Any]:
    """The request the gateway sent, validated with the provider's own types."""
    sent = env.sims[kind].requests()[-1]
    checks = providers()
    check = checks.anthropic_request if kind == "anthropic" else checks.gemini_request
    problems = check(sent["body"])
    assert not problems, f"the gateway sent an invalid {kind} request: {problems} {sent['body']}"
    return sent


def _chat(
    env: Env, kind: str, stream: bool, **kwargs: Any
) -> tuple[dict[str, Any], str, dict[str, Any], Decimal]:
    """(message, finish_reason, usage, credits) of one chat call, checking every payload on the way."""
    env.sims[kind].clear()
    model = MODELS[kind]
    if not stream:
        raw = env.client.chat.completions.with_raw_response.create(model=model, **kwargs)
        body = json.loads(raw.http_response.content)
        assert_openai(body, "CreateChatCompletionResponse")
        assert raw.headers["x-model-used"] == model
        choice = body["choices"][0]
        _check_sent(env, kind)
        return (
            choice["message"],
            choice["finish_reason"],
            body["usage"],
            Decimal(raw.headers["x-credits-used"]),
        )
    with env.client.chat.completions.with_streaming_response.create(
        model=model, stream=True, stream_options={"include_usage": True}, **kwargs
    ) as resp:
        text = resp.read().decode()
    chunks = assert_openai_sse(text)
    _check_sent(env, kind)
    usage_chunk = chunks[-1]  # asked for: the last chunk, and it carries the charge (SPEC "Streaming")
    assert usage_chunk["choices"] == [] and "credits_used" in usage_chunk
    assert all(c["choices"] for c in chunks[:-1]) and {c["model"] for c in chunks} == {model}
    message: dict[str, Any] = {"content": None, "tool_calls": []}
    finish = None
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks[:-1]:
        for choice in chunk["choices"]:
            delta = choice["delta"]
            if delta.get("content"):
                message["content"] = (message["content"] or "") + delta["content"]
            for frag in delta.get("tool_calls") or []:
                call = calls.setdefault(
                    frag["index"], {"id": None, "function": {"name": "", "arguments": ""}}
                )
                call["id"] = frag.get("id") or call["id"]
                fn = frag.get("function") or {}
                call["function"]["name"] += fn.get("name") or ""
                call["function"]["arguments"] += fn.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    message["tool_calls"] = [calls[i] for i in sorted(calls)]
    amount = Decimal(text.rsplit('"credits_used":', 1)[1].split("}", 1)[0])
    return message, finish or "", usage_chunk["usage"], amount


KINDS = pytest.mark.parametrize("kind", ["anthropic", "google"])
STREAM = pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])


@KINDS
@STREAM
def test_plain_chat(env: Env, kind: str, stream: bool):
    message, finish, usage, credits = _chat(
        env, kind, stream, messages=[{"role": "user", "content": "Hello there"}]
    )
    assert "Hello" in message["content"] and finish == "stop"
    assert credits == _credits(kind, usage) and credits > 0


@KINDS
@STREAM
def test_system_prompt_and_multi_turn(env: Env, kind: str, stream: bool):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "developer", "content": "Stay terse."},
        {"role": "user", "content": "Second question please"},
    ]
    message, _, usage, credits = _chat(
        env, kind, stream, messages=messages, temperature=0.2, max_tokens=100, stop=["END"]
    )
    assert "Second question please" in message["content"]
    sent = env.sims[kind].requests()[-1]["body"]
    if kind == "anthropic":
        assert "terse" in json.dumps(sent["system"]) and len(sent["messages"]) == 3
        assert sent["max_tokens"] == 100 and sent["stop_sequences"] == ["END"]
    else:
        assert "terse" in json.dumps(sent["systemInstruction"]) and len(sent["contents"]) == 3
        assert sent["generationConfig"]["maxOutputTokens"] == 100
    assert credits == _credits(kind, usage)


@KINDS
@STREAM
@pytest.mark.parametrize(
    ("prompt", "tool_choice", "calls"),
    [
        ("What is the weather in Paris?", "auto", 1),
        ("parallel weather in Paris and Rome", "auto", 2),
        ("Hi", {"type": "function", "function": {"name": "get_weather"}}, 1),
        ("Hi", "required", 1),
    ],
    ids=["single", "parallel", "forced-named", "required"],
)
def test_tools(env: Env, kind: str, stream: bool, prompt: str, tool_choice: Any, calls: int):
    message, finish, usage, credits = _chat(
        env,
        kind,
        stream,
        messages=[{"role": "user", "content": prompt}],
        tools=[WEATHER],
        tool_choice=tool_choice,
    )
    assert finish == "tool_calls"
    assert len(message["tool_calls"]) == calls
    for call in message["tool_calls"]:
        assert call["function"]["name"] == "get_weather" and call["id"]
        assert json.loads(call["function"]["arguments"])["location"]
    assert credits == _credits(kind, usage)


@KINDS
@STREAM
def test_tool_results_round_trip(env: Env, kind: str, stream: bool):
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
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
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21C"},
    ]
    message, finish, _, _ = _chat(env, kind, stream, messages=messages, tools=[WEATHER])
    assert finish == "stop" and "Sunny, 21C" in message["content"]


@KINDS
@STREAM
def test_json_mode(env: Env, kind: str, stream: bool):
    message, _, _, _ = _chat(
        env,
        kind,
        stream,
        messages=[{"role": "user", "content": "Reply in JSON"}],
        response_format={"type": "json_object"},
    )
    assert isinstance(json.loads(message["content"]), dict)


@KINDS
@STREAM
def test_structured_output(env: Env, kind: str, stream: bool):
    message, _, usage, credits = _chat(
        env,
        kind,
        stream,
        messages=[{"role": "user", "content": "Describe a person"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON, "strict": True},
        },
    )
    person = json.loads(message["content"])
    assert set(person) == {"name", "age"} and isinstance(person["age"], (int, float))
    assert credits == _credits(kind, usage)


@KINDS
@STREAM
def test_vision_data_uri_and_url(env: Env, kind: str, stream: bool):
    url = f"{env.sims['google'].url}/_sim/images/test.png"
    content = [
        {"type": "text", "text": "What is in these images?"},
        {"type": "image_url", "image_url": {"url": PNG_URI}},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    message, _, _, _ = _chat(env, kind, stream, messages=[{"role": "user", "content": content}])
    assert "saw 2 image(s)" in message["content"]
    sent = json.dumps(env.sims[kind].requests()[-1]["body"])
    if kind == "google":
        assert url not in sent  # Gemini gets the bytes: the gateway fetched the URL itself


@KINDS
@STREAM
def test_pdf_input(env: Env, kind: str, stream: bool):
    content = [
        {"type": "text", "text": "Summarise this document"},
        {"type": "file", "file": {"filename": "doc.pdf", "file_data": PDF_URI}},
    ]
    message, _, _, _ = _chat(env, kind, stream, messages=[{"role": "user", "content": content}])
    assert "saw 1 document(s)" in message["content"]


def test_a_url_to_a_private_address_is_refused(env: Env):
    for url in (
        "https://169.254.169.254/latest/meta-data.png",
        "https://10.0.0.1/x.png",
        "https://localhost/x.png",
    ):
        with pytest.raises(openai.BadRequestError) as err:
            env.client.chat.completions.create(
                model=MODELS["google"],
                messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],
            )
        assert err.value.code == "invalid_image_url"
        assert "private" in err.value.message or "reserved" in err.value.message


def test_unsupported_parameter_is_named(env: Env):
    """(``n`` > 1 was the example here; it is now emulated: tests/e2e/test_emulated_n.py.)"""
    with pytest.raises(openai.BadRequestError) as err:
        env.client.chat.completions.create(
            model=MODELS["anthropic"], messages=[{"role": "user", "content": "x"}], logprobs=True
        )
    assert err.value.code == "unsupported_parameter" and err.value.param == "logprobs"


@KINDS
def test_provider_errors_are_translated(env: Env, kind: str):
    status, expected = (529, 503) if kind == "anthropic" else (503, 503)
    env.sims[kind].script([{"status": status}])
    with pytest.raises(openai.APIStatusError) as err:
        env.client.chat.completions.create(model=MODELS[kind], messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == expected and err.value.code == "upstream_unavailable"
    env.sims[kind].script([{"status": 429}])
    with pytest.raises(openai.RateLimitError) as err:
        env.client.chat.completions.create(model=MODELS[kind], messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "rate_limit_exceeded"


def test_gemini_embeddings(env: Env):
    raw = env.client.embeddings.with_raw_response.create(
        model="gemini-embedding-001", input=["one text", "and another one"], encoding_format="float"
    )
    body = json.loads(raw.http_response.content)
    assert_openai(body, "CreateEmbeddingResponse")
    assert len(body["data"]) == 2 and body["usage"]["prompt_tokens"] > 0
    assert (
        Decimal(raw.headers["x-credits-used"]) == body["usage"]["prompt_tokens"] * Decimal("0.15") / 1_000_000
    )
    assert ":batchEmbedContents" in env.sims["google"].requests()[-1]["path"]
