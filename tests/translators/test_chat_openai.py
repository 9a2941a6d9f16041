"""OpenAI chat ⇄ the OpenAI wire format (OpenAI, xAI, OpenAI-compatible servers): the body passes
through with ``model`` rewritten both ways, usage is always asked for and read, and a stream's chunks
leave as the provider's own bytes but for the model's name."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from ext_proc.translators.base import ResponseContext, Target, Usage
from ext_proc.translators.chat_openai import ChatOpenAI, OpenAIStream
from tests.conformance import assert_openai
from tests.translators._support import each_split, replay, sse_payloads, stream_events

SLUG = "gpt-4o-mini"
UPSTREAM = "gpt-4o-mini-2024-07-18"
CTX = ResponseContext(SLUG, UPSTREAM, 1_760_000_000)
CTX_USAGE = replace(CTX, include_usage=True)
IMAGE = {"type": "image_url", "image_url": {"url": "https://images.test/cat.jpg"}}


def target(kind: str = "openai") -> Target:
    return Target(kind, "/v1", "sk-provider", UPSTREAM)


def request(body: dict[str, Any], kind: str = "openai") -> dict[str, Any]:
    upstream = ChatOpenAI().request(dict(body), target(kind))
    assert upstream.path == "/v1/chat/completions"
    assert upstream.headers == {"authorization": "Bearer sk-provider", "content-type": "application/json"}
    out: dict[str, Any] = orjson.loads(upstream.body)
    assert_openai(out, "CreateChatCompletionRequest")
    return out


# --------------------------------------------------------------------- request

FULL: dict[str, Any] = {
    "model": SLUG,
    "messages": [
        {"role": "system", "content": "terse"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}, IMAGE]},
    ],
    "temperature": 0.2,
    "n": 2,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "store": True,
    "service_tier": "auto",
    "metadata": {"team": "a"},
    "prediction": {"type": "content", "content": "x"},
    "modalities": ["text"],
    "logit_bias": {"50256": -100},
}


def test_the_body_passes_through_with_the_providers_model() -> None:
    assert request(FULL) == {**FULL, "model": UPSTREAM}


@pytest.mark.parametrize(
    ("kind", "dropped"),
    [
        ("openai", set()),
        ("xai", {"store", "service_tier", "prediction", "modalities"}),
        ("openai_compatible", {"store", "service_tier", "prediction", "metadata"}),
    ],
)
def test_what_a_kind_of_server_rejects_is_dropped(kind: str, dropped: set[str]) -> None:
    out = request(FULL, kind)
    assert set(FULL) - set(out) == dropped
    assert out == {k: v for k, v in FULL.items() if k not in dropped} | {"model": UPSTREAM}


@pytest.mark.parametrize(
    ("options", "sent"),
    [
        (None, {"include_usage": True}),
        ({"include_usage": False}, {"include_usage": True}),
        ({"include_obfuscation": False}, {"include_obfuscation": False, "include_usage": True}),
    ],
)
def test_a_stream_always_asks_for_usage(options: dict[str, Any] | None, sent: dict[str, Any]) -> None:
    body = {"model": SLUG, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    if options is not None:
        body["stream_options"] = options
    assert request(body)["stream_options"] == sent


def test_no_stream_no_stream_options() -> None:
    assert "stream_options" not in request({"model": SLUG, "messages": [{"role": "user", "content": "x"}]})


def test_the_provider_fetches_image_urls_itself() -> None:
    assert ChatOpenAI().media_urls(FULL) == []


# -------------------------------------------------------------------- response

COMPLETION = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1760000000,"model":"'
    + UPSTREAM.encode()
    + b'",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello \\"model\\": x","refusal":null,'
    b'"annotations":[]},"logprobs":null,"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,'
    b'"prompt_tokens_details":{"cached_tokens":6,"audio_tokens":0},'
    b'"completion_tokens_details":{"reasoning_tokens":3,"audio_tokens":0}},'
    b'"service_tier":"default","system_fingerprint":"fp_1"}'
)


def test_the_answer_names_the_slug_and_its_usage_is_read() -> None:
    res = ChatOpenAI().response(200, COMPLETION, CTX)
    assert (res.status, res.error_code) == (200, None)
    assert res.body == COMPLETION.replace(UPSTREAM.encode(), SLUG.encode())  # nothing else touched
    out = orjson.loads(res.body)
    assert_openai(out, "CreateChatCompletionResponse")
    assert out["model"] == SLUG and out["choices"][0]["message"]["content"] == 'Hello "model": x'
    assert res.usage == Usage(19, 6, 10, 3)


def test_an_answer_already_named_by_the_slug_is_passed_as_is() -> None:
    raw = COMPLETION.replace(UPSTREAM.encode(), SLUG.encode())
    assert ChatOpenAI().response(200, raw, CTX).body is raw  # the exchange then sends no body mutation


def test_an_answer_without_usage_has_none() -> None:
    doc = orjson.loads(COMPLETION)
    del doc["usage"]
    assert ChatOpenAI().response(200, orjson.dumps(doc), CTX).usage is None


def test_usage_that_cannot_be_true_is_rejected() -> None:
    raw = COMPLETION.replace(b'"prompt_tokens":19', b'"prompt_tokens":-19')
    usage = ChatOpenAI().response(200, raw, CTX).usage
    assert usage is not None and usage.rejected == "provider usage prompt_tokens=-19 is negative"


@pytest.mark.parametrize("raw", [b"<html>oops</html>", b"[1, 2]", b'"text"'])
def test_an_unreadable_answer_is_the_providers_failure(raw: bytes) -> None:
    res = ChatOpenAI().response(200, raw, CTX)
    assert (res.status, res.error_code, res.usage) == (502, "upstream_error", None)
    assert orjson.loads(res.body)["error"]["code"] == "upstream_error"


# ---------------------------------------------------------------------- stream


def chunk(delta: dict[str, Any], finish: str | None = None, model: str = UPSTREAM) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    doc = {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "created": 1760000000,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_1",
        "choices": [choice],
        "usage": None,  # OpenAI writes it in every chunk once include_usage is set
    }
    return b"data: " + orjson.dumps(doc) + b"\n\n"


USAGE = {
    "prompt_tokens": 9,
    "completion_tokens": 4,
    "total_tokens": 13,
    "prompt_tokens_details": {"cached_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 1},
}
ROLE = chunk({"role": "assistant", "content": "", "refusal": None})
TEXT = [chunk({"content": "Hel"}), chunk({"content": "lo"})]
FINISH = chunk({}, "stop")
USAGE_CHUNK = (
    b'data: {"id":"chatcmpl-9","object":"chat.completion.chunk","created":1760000000,"model":"'
    + UPSTREAM.encode()
    + b'","service_tier":"default","system_fingerprint":"fp_1","choices":[],"usage":'
    + orjson.dumps(USAGE)
    + b"}\n\n"
)
DONE = b"data: [DONE]\n\n"
STREAM = ROLE + b"".join(TEXT) + FINISH + USAGE_CHUNK + DONE


def renamed(raw: bytes) -> bytes:
    return raw.replace(b'"model":"' + UPSTREAM.encode() + b'"', b'"model":"' + SLUG.encode() + b'"')


@each_split
def test_a_stream_without_the_usage_chunk(size: int | None) -> None:
    stream = ChatOpenAI().stream(CTX)
    out = replay(stream, STREAM, size)
    # The provider's bytes, renamed; the usage chunk (not asked for) and [DONE] are not passed on,
    # and the final chunk is the one held for credits_used.
    assert out == renamed(ROLE + b"".join(TEXT) + FINISH)
    assert stream.held == renamed(FINISH)[6:-2]
    assert (stream.done, stream.error_code, stream.response_id) == (True, None, "chatcmpl-9")
    assert stream.usage == Usage(9, 0, 4, 1)
    events = stream_events(ChatOpenAI().stream(CTX), STREAM, size)
    assert {e["model"] for e in events} == {SLUG}


@each_split
def test_a_stream_with_the_usage_chunk(size: int | None) -> None:
    stream = ChatOpenAI().stream(CTX_USAGE)
    out = replay(stream, STREAM, size)
    assert out == renamed(ROLE + b"".join(TEXT) + FINISH + USAGE_CHUNK)
    assert stream.held == renamed(USAGE_CHUNK)[6:-2]  # the usage chunk stays the last one
    events = sse_payloads(out)
    assert events[-1]["choices"] == [] and events[-1]["usage"] == USAGE
    for event in events:
        assert_openai(event, "CreateChatCompletionStreamResponse")
        assert event["model"] == SLUG


def test_a_stream_already_named_by_the_slug_passes_byte_for_byte() -> None:
    raw = ROLE.replace(UPSTREAM.encode(), SLUG.encode()) + TEXT[0].replace(UPSTREAM.encode(), SLUG.encode())
    stream = ChatOpenAI().stream(CTX)
    assert stream.feed(raw) == raw


def test_the_last_event_without_a_blank_line_is_read_at_the_end() -> None:
    stream = ChatOpenAI().stream(CTX_USAGE)
    out = stream.feed(ROLE + FINISH) + stream.feed(USAGE_CHUNK.rstrip(b"\n"))
    assert stream.usage is None
    out += stream.finish()
    assert out == renamed(ROLE + FINISH)
    assert stream.usage == Usage(9, 0, 4, 1) and stream.held == renamed(USAGE_CHUNK)[6:-2]
    assert not stream.done  # no [DONE]: the exchange decides what an early end is


@pytest.mark.parametrize(
    ("code", "error_code"), [("rate_limit_exceeded", "rate_limit_exceeded"), (None, "upstream_error")]
)
def test_an_error_event_is_held_as_the_last_chunk(code: str | None, error_code: str) -> None:
    error = {"error": {"message": "Rate limit reached", "type": "requests", "param": None, "code": code}}
    stream = ChatOpenAI().stream(CTX)
    out = stream.feed(ROLE + TEXT[0] + b"data: " + orjson.dumps(error) + b"\n\n")
    assert out == renamed(ROLE + TEXT[0])
    assert stream.error_code == error_code and orjson.loads(stream.held or b"") == error


def test_an_event_over_the_bound_overflows() -> None:
    stream = OpenAIStream(replace(CTX, max_event_bytes=256))
    stream.feed(ROLE)
    stream.feed(b'data: {"choices":[{"delta":{"content":"' + b"x" * 300)
    assert stream.overflowed


def test_the_chunks_id_is_the_providers() -> None:
    stream = ChatOpenAI().stream(CTX)
    stream.feed(ROLE)
    assert stream.response_id == "chatcmpl-9"
