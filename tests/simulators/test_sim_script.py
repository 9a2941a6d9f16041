"""Scripted behaviour (`/_sim/script`) and the request log (`/_sim/requests`)."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest
from sim_checks import AUTH, Checks, post, sse_data

from simulators import conformance

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "one two three four five"}]}
STREAM = {**CHAT, "stream": True}
MESSAGES = {"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
FIXTURES = conformance.FIXTURES_DIR


def _chat(sim, body=CHAT, **kwargs) -> httpx.Response:
    return post(sim, "/v1/chat/completions", body, **kwargs)


def test_a_no_body_step_answers_its_status_alone(openai_sim):
    """A bare status, as a proxy in front of a provider may answer: no body at all."""
    openai_sim.script([{"status": 502, "action": "no_body"}])
    bare = _chat(openai_sim)
    assert bare.status_code == 502 and bare.content == b"" and bare.headers["content-length"] == "0"
    assert _chat(openai_sim).status_code == 200


def test_status_steps_use_each_providers_error_body(openai_sim, anthropic_sim, google_sim, checks: Checks):
    openai_sim.script([{"status": 503}, {"status": 429}])
    first, second, third = _chat(openai_sim), _chat(openai_sim), _chat(openai_sim)
    assert (first.status_code, second.status_code, third.status_code) == (503, 429, 200)
    checks.openai_doc(first.json(), "ErrorResponse")
    assert first.json()["error"]["type"] == "server_error"
    assert second.json()["error"]["code"] == "rate_limit_exceeded"

    anthropic_sim.script([{"status": 529}, {"status": 429}])
    overloaded = post(anthropic_sim, "/v1/messages", MESSAGES)
    limited = post(anthropic_sim, "/v1/messages", MESSAGES)
    assert overloaded.status_code == 529 and overloaded.json()["error"]["type"] == "overloaded_error"
    assert limited.status_code == 429 and limited.json()["error"]["type"] == "rate_limit_error"
    assert limited.headers["retry-after"] and limited.json()["request_id"].startswith("req_")
    assert limited.headers["request-id"] == limited.json()["request_id"]
    for response in (overloaded, limited):
        checks.provider("anthropic-response", response.content)

    google_sim.script([{"status": 429}])
    exhausted = post(google_sim, "/v1beta/models/gemini-2.5-flash:generateContent", GEMINI)
    assert exhausted.status_code == 429
    assert exhausted.json()["error"] | {"message": ""} == {
        "code": 429,
        "status": "RESOURCE_EXHAUSTED",
        "message": "",
    }
    checks.provider("gemini-response", exhausted.content)


def test_body_and_headers_steps(openai_sim):
    openai_sim.script(
        [
            {"status": 418, "body": {"custom": True}, "headers": {"X-Extra": "yes"}},
            {"headers": {"x-extra": "normal"}},
        ]
    )
    custom = _chat(openai_sim)
    assert (custom.status_code, custom.json(), custom.headers["x-extra"]) == (418, {"custom": True}, "yes")
    normal = _chat(openai_sim)
    assert normal.status_code == 200 and normal.headers["x-extra"] == "normal"
    assert normal.json()["object"] == "chat.completion"


def test_rejected_key_consumes_no_step(openai_sim):
    openai_sim.script([{"status": 500}])
    assert _chat(openai_sim, headers={"authorization": "Bearer wrong"}, auth=False).status_code == 401
    assert _chat(openai_sim).status_code == 500
    assert _chat(openai_sim).status_code == 200


def test_reset_closes_without_a_response(openai_sim):
    openai_sim.script([{"action": "reset"}])
    with pytest.raises(httpx.TransportError):
        _chat(openai_sim)
    assert _chat(openai_sim).status_code == 200


def test_hang_then_answer_or_time_out(openai_sim):
    openai_sim.script([{"action": "hang", "seconds": 5}, {"action": "hang", "seconds": 0.3}])
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        _chat(openai_sim, timeout=0.5)
    assert time.monotonic() - started < 2
    started = time.monotonic()
    response = _chat(openai_sim)
    assert response.status_code == 200 and time.monotonic() - started >= 0.3


def test_cut_stream_after_k_chunks(openai_sim):
    openai_sim.script([{"action": "cut_stream", "after_chunks": 3}])
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST", openai_sim.url + "/v1/chat/completions", json=STREAM, headers=AUTH["openai"]
        ) as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_raw():
            received += chunk
    payloads = sse_data(received.decode())
    assert len(payloads) == 3 and "[DONE]" not in payloads
    assert _chat(openai_sim, STREAM).text.endswith("data: [DONE]\n\n")


def test_cut_non_streamed_body(openai_sim):
    openai_sim.script([{"action": "cut_stream", "after_chunks": 0}])
    with pytest.raises(httpx.RemoteProtocolError):
        _chat(openai_sim)


def test_answer_bytes_grows_the_answer_in_large_stream_events(openai_sim):
    size = 200_000
    openai_sim.script([{"answer_bytes": size}])
    text = orjson.loads(_chat(openai_sim).content)["choices"][0]["message"]["content"]
    assert len(text) == size and text.startswith("Hello! You said:")
    openai_sim.script([{"answer_bytes": size}])
    chunks = [orjson.loads(d) for d in sse_data(_chat(openai_sim, STREAM).text) if d != "[DONE]"]
    pieces = [c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]]
    assert "".join(pieces) == text
    assert len(chunks) < size // 4096  # large events, not one per 12 characters


def test_an_endless_event_without_delay_comes_in_one_write(openai_sim):
    openai_sim.script([{"action": "endless_event", "after_chunks": 0, "size": 300_000, "chunk_delay_ms": 0}])
    body = _chat(openai_sim, STREAM).content
    assert body == b'data: {"text":"' + b"a" * 300_000


def test_chunk_delay_step_paces_one_stream(openai_sim):
    openai_sim.script([{"chunk_delay_ms": 40}])
    started = time.monotonic()
    paced = _chat(openai_sim, STREAM)
    elapsed = time.monotonic() - started
    events = len(sse_data(paced.text))
    assert elapsed >= 0.040 * (events - 1) * 0.9
    started = time.monotonic()
    _chat(openai_sim, STREAM)
    assert time.monotonic() - started < elapsed / 2


def test_replay_sse_fixture_as_recorded(anthropic_sim, checks):
    name = "anthropic_recorded_stream.sse"
    anthropic_sim.script([{"action": "replay", "fixture": name}])
    response = post(anthropic_sim, "/v1/messages", {**MESSAGES, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.content == (FIXTURES / name).read_bytes()


def test_replay_json_fixtures(google_sim, anthropic_sim, checks):
    name = "gemini_firebase_unary-failure-api-key.json"
    google_sim.script([{"action": "replay", "fixture": name}])
    response = post(google_sim, "/v1beta/models/gemini-2.5-flash:generateContent", GEMINI)
    assert response.status_code == 400 and response.content == (FIXTURES / name).read_bytes()

    exchange = "anthropic_sdk_recorded_exchange_stream_with_429.json"
    anthropic_sim.script(
        [{"action": "replay", "fixture": exchange}, {"action": "replay", "fixture": exchange, "index": 2}]
    )
    limited = post(anthropic_sim, "/v1/messages", MESSAGES)
    assert limited.status_code == 429 and limited.json()["error"]["type"] == "rate_limit_error"
    stream = post(anthropic_sim, "/v1/messages", {**MESSAGES, "stream": True})
    assert stream.status_code == 200
    checks.provider("anthropic-sse", stream.text)


def test_usage_override_in_provider_field_names(openai_sim, anthropic_sim, google_sim):
    openai_sim.script([{"usage": {"prompt_tokens": 1000, "prompt_tokens_details": {"cached_tokens": 600}}}])
    usage = _chat(openai_sim).json()["usage"]
    assert usage["prompt_tokens"] == 1000 and usage["prompt_tokens_details"]["cached_tokens"] == 600
    assert usage["total_tokens"] == 1000 + usage["completion_tokens"]

    anthropic_sim.script([{"usage": {"cache_creation_input_tokens": 7}}])
    stream = post(anthropic_sim, "/v1/messages", {**MESSAGES, "stream": True})
    events = [orjson.loads(d) for d in sse_data(stream.text)]
    assert events[0]["message"]["usage"]["cache_creation_input_tokens"] == 7
    assert events[-2]["usage"]["cache_creation_input_tokens"] == 7

    google_sim.script([{"usage": {"promptTokenCount": 50}}])
    usage = post(google_sim, "/v1beta/models/g:generateContent", GEMINI).json()["usageMetadata"]
    assert usage["promptTokenCount"] == 50 and usage["totalTokenCount"] == 50 + usage["candidatesTokenCount"]


@pytest.mark.parametrize(
    "step",
    [
        {"statuz": 500},
        {"action": "explode"},
        {"action": "replay", "fixture": "nope.sse"},
        {"action": "replay", "fixture": "../SPEC.md"},
        {"status": 99},
        "reset",
    ],
)
def test_malformed_steps_are_refused(openai_sim, step):
    with pytest.raises(ValueError):
        openai_sim.script([step])
    assert openai_sim.client.get("/_sim/script").json() == {"pending": 0}


def test_request_log_and_clear(google_sim):
    post(google_sim, "/v1beta/models/g:streamGenerateContent?alt=sse", GEMINI, {"x-trace": "t1"})
    post(google_sim, "/v1beta/models/g:generateContent", b"not json")
    first, second = google_sim.requests()
    assert first["method"] == "POST" and first["path"] == "/v1beta/models/g:streamGenerateContent"
    assert first["query"] == {"alt": "sse"} and first["body"] == GEMINI
    assert first["headers"]["x-trace"] == "t1" and first["headers"]["x-goog-api-key"]
    assert second["body"] == "not json"
    google_sim.script([{"status": 500}])
    google_sim.clear()
    assert google_sim.requests() == []
    assert post(google_sim, "/v1beta/models/g:generateContent", GEMINI).status_code == 200
