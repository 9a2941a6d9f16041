"""The same request gets the same refusal from every provider, as OpenAI words it (issue 12 items 3 and 4).

Invalid parameters are refused by the gateway before any provider sees them, with OpenAI's
code and ``param``; a provider's own refusal keeps its detail: OpenAI's code and ``param``
pass through, Anthropic's and Gemini's are mapped to the closest OpenAI code and the
OpenAI name of the field they blame.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.e2e.support import SIM_KEY, Tenant

MODELS = ("gpt-4o-mini", "claude-sonnet-4-5", "gemini-2-5-flash")
CHAT = [{"role": "user", "content": "Hello!"}]

# (extra request fields, error code, param): each breaks one of OpenAI's documented rules.
INVALID = [
    ({"temperature": 7}, "invalid_value", "temperature"),
    ({"temperature": -0.1}, "invalid_value", "temperature"),
    ({"temperature": "hot"}, "invalid_type", "temperature"),
    ({"top_p": 1.5}, "invalid_value", "top_p"),
    ({"n": 0}, "invalid_value", "n"),
    ({"n": 1.5}, "invalid_type", "n"),
    ({"presence_penalty": -2.5}, "invalid_value", "presence_penalty"),
    ({"frequency_penalty": 3}, "invalid_value", "frequency_penalty"),
    ({"max_tokens": 0}, "invalid_value", "max_tokens"),
    ({"max_completion_tokens": -5}, "invalid_value", "max_completion_tokens"),
    ({"max_completion_tokens": "10"}, "invalid_type", "max_completion_tokens"),
    ({"logprobs": True, "top_logprobs": 21}, "invalid_value", "top_logprobs"),
    ({"logprobs": "yes"}, "invalid_type", "logprobs"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "invalid_value", "stop"),
    ({"stop": 3}, "invalid_type", "stop"),
    ({"seed": 1.5}, "invalid_type", "seed"),
    ({"stream": "yes"}, "invalid_type", "stream"),
    ({"stream_options": {"include_usage": True}}, "invalid_value", "stream_options"),
    ({"messages": []}, "invalid_value", "messages"),
    ({"messages": None}, "missing_required_parameter", "messages"),
]


def _post(gateway: Stack, key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    )


@pytest.mark.parametrize(("extra", "code", "param"), INVALID, ids=[str(c[0]) for c in INVALID])
def test_invalid_parameters_are_refused_as_openai_refuses_them(
    gateway: Stack,
    tenant: Tenant,
    three_formats: dict[str, SimulatorProcess],
    extra: dict[str, Any],
    code: str,
    param: str,
):
    body = {"messages": CHAT, **extra}
    body = {k: v for k, v in body.items() if v is not None}
    # OpenAI itself (its simulator, which checks requests against OpenAI's spec) refuses it so;
    # for an over-long stop list the spec's anyOf makes the simulator say invalid_type.
    direct = httpx.post(
        f"{three_formats['gpt-4o-mini'].base_url}/chat/completions",
        json={"model": "gpt-4o-mini", **body},
        headers={"authorization": f"Bearer {SIM_KEY}"},
    )
    assert direct.status_code == 400
    if extra.get("stop") != ["a", "b", "c", "d", "e"]:
        assert (direct.json()["error"]["code"], direct.json()["error"]["param"]) == (code, param)
    for model in MODELS:
        sim = three_formats[model]
        seen = len(sim.requests())
        resp = _post(gateway, tenant.key, {"model": model, **body})
        assert resp.status_code == 400, (model, resp.text)
        error = resp.json()["error"]
        assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error"), model
        assert len(sim.requests()) == seen, f"{model}: the provider was called with an invalid request"


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gemini-2-5-flash"])
def test_values_valid_for_openai_are_served_within_the_providers_range(
    tenant: Tenant, gateway: Stack, three_formats: dict[str, SimulatorProcess], model: str
):
    """temperature 2 and the penalties' extremes are OpenAI-valid: served, mapped as the table says."""
    reply = tenant.client(gateway).chat.completions.create(
        model=model, messages=CHAT, temperature=2, presence_penalty=-2, frequency_penalty=2, max_tokens=1
    )
    assert reply.choices[0].finish_reason in ("length", "stop")
    sent = three_formats[model].requests()[-1]["body"]
    if model == "claude-sonnet-4-5":
        assert sent["temperature"] == 1.0  # Anthropic's maximum
    else:
        assert sent["generationConfig"]["temperature"] == 2


def _openai_error(message: str, code: str | None, param: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def _anthropic_error(message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


def _gemini_error(message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}
    if field:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field, "description": message}],
            }
        ]
    return {"error": error}


# (model, request extras, the provider's 400 body, expected code, expected param)
PROVIDER_ERRORS = [
    (
        "gpt-4o-mini",
        {},
        _openai_error("Invalid 'temperature': decimal above maximum value.", "invalid_value", "temperature"),
        "invalid_value",
        "temperature",
    ),
    (
        "gpt-4o-mini",
        {"max_tokens": 100000},
        _openai_error(
            "max_tokens is too large: 100000. This model supports at most 16384 completion tokens.",
            "invalid_value",
            "max_tokens",
        ),
        "invalid_value",
        "max_tokens",
    ),
    (
        "gpt-4o-mini",
        {},
        _openai_error(
            "This model's maximum context length is 128000 tokens.", "context_length_exceeded", "messages"
        ),
        "context_length_exceeded",
        "messages",
    ),
    # A code that is not OpenAI's (an OpenAI-compatible server's own) is the gateway's generic one.
    ("gpt-4o-mini", {}, _openai_error("bad", "vendor_specific_thing", None), "invalid_request", None),
    (
        "claude-sonnet-4-5",
        {"max_completion_tokens": 100000},
        _anthropic_error(
            "max_tokens: 100000 > 64000, which is the maximum allowed number of output tokens for "
            "claude-sonnet-4-5-20250929"
        ),
        "invalid_value",
        "max_completion_tokens",
    ),
    (
        "claude-sonnet-4-5",
        {},
        _anthropic_error("messages.0.content.0.text: Input should be a valid string"),
        "invalid_type",
        "messages",
    ),
    (
        "claude-sonnet-4-5",
        {},
        _anthropic_error("prompt is too long: 215000 tokens > 200000 maximum"),
        "context_length_exceeded",
        "messages",
    ),
    (
        "gemini-2-5-flash",
        {"max_tokens": 100000},
        _gemini_error(
            "Invalid value at 'generation_config.max_output_tokens' (TYPE_INT32), 100000",
            "generation_config.max_output_tokens",
        ),
        "invalid_value",
        "max_tokens",
    ),
    (
        "gemini-2-5-flash",
        {},
        _gemini_error("* GenerateContentRequest.generation_config.stop_sequences: too many stop sequences"),
        "invalid_value",
        "stop",
    ),
    (
        "gemini-2-5-flash",
        {},
        _gemini_error(
            "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
        ),
        "context_length_exceeded",
        "messages",
    ),
]


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
@pytest.mark.parametrize(("model", "extra", "provider_body", "code", "param"), PROVIDER_ERRORS)
def test_provider_errors_keep_their_detail(
    tenant: Tenant,
    gateway: Stack,
    three_formats: dict[str, SimulatorProcess],
    model: str,
    extra: dict[str, Any],
    provider_body: dict[str, Any],
    code: str,
    param: str | None,
    stream: bool,
):
    three_formats[model].script([{"status": 400, "body": provider_body}])
    with pytest.raises(openai.BadRequestError) as err:
        created = tenant.client(gateway).chat.completions.create(
            model=model, messages=CHAT, stream=stream, **extra
        )
        if stream:
            list(created)  # type: ignore[arg-type]
    body = err.value.body
    assert isinstance(body, dict)
    assert (body["code"], body["param"], body["type"]) == (code, param, "invalid_request_error")


def test_model_not_found_is_an_invalid_request_error(tenant: Tenant, gateway: Stack, catalog: None):
    """OpenAI's type for an unknown model, as for every 4xx but rate limits."""
    resp = _post(gateway, tenant.key, {"model": "no-such-model", "messages": CHAT})
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert resp.json()["error"]["code"] == "model_not_found"
