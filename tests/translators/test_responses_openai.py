"""The Responses API ⇄ OpenAI: the body passes through with ``model`` rewritten both ways, usage is
read from the answer or the stream's last event, and the stream's events leave as the provider's
own bytes but for the model's name; its last event is held for the charge."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from ext_proc.endpoints.responses import ENDPOINT
from ext_proc.translators.base import ResponseContext, Target, Usage
from ext_proc.translators.responses_openai import TRANSLATOR as OPENAI
from simulators.conformance import iter_sse
from tests.conformance import assert_openai
from tests.translators._support import each_split, own_fixture

SLUG = "gpt-4o-mini"
UPSTREAM = "gpt-4o-mini-2024-07-18"
CTX = ResponseContext(SLUG, UPSTREAM, 1_760_000_000, request={"model": SLUG, "input": "hi", "stream": True})
STREAM = own_fixture("openai_responses_stream.sse")  # OpenAI's event framing and shapes
ANSWER: dict[str, Any] = json.loads(
    next(data for name, data in iter_sse(STREAM.decode()) if name == "response.completed")
)["response"]


def test_the_request_passes_through_with_the_providers_model() -> None:
    body = {"model": SLUG, "input": [{"role": "user", "content": "hi"}], "store": False, "stream": True}
    upstream = OPENAI.request(dict(body), Target("openai", "/v1", "sk-o", UPSTREAM))
    assert (upstream.path, orjson.loads(upstream.body)) == ("/v1/responses", {**body, "model": UPSTREAM})


def test_an_answer_keeps_its_bytes_but_for_the_model_and_its_usage_is_read() -> None:
    raw = orjson.dumps(
        {**ANSWER, "usage": {**ANSWER["usage"], "output_tokens_details": {"reasoning_tokens": 2}}}
    )
    res = OPENAI.response(200, raw, CTX)
    doc = orjson.loads(res.body)
    assert_openai(doc, "Response")
    assert doc["model"] == SLUG and res.body == raw.replace(UPSTREAM.encode(), SLUG.encode(), 1)
    assert res.usage == Usage(14, 0, 7, 2)


def test_an_error_keeps_openais_code_and_param() -> None:
    raw = orjson.dumps(
        {
            "error": {
                "message": "Invalid 'max_output_tokens': integer below minimum value.",
                "type": "invalid_request_error",
                "param": "max_output_tokens",
                "code": "integer_below_min_value",
            }
        }
    )
    res = OPENAI.response(400, raw, CTX)
    doc = orjson.loads(res.body)
    assert (res.status, doc["error"]["param"]) == (400, "max_output_tokens")


def replay(raw: bytes, size: int | None) -> tuple[Any, bytes]:
    stream = OPENAI.stream(CTX)
    if size is None:
        out = stream.feed(raw)
    else:
        out = b"".join(stream.feed(raw[i : i + size]) for i in range(0, len(raw), size))
    out += stream.finish()
    return stream, out


@each_split
def test_a_stream_passes_through_renamed_and_its_last_event_is_held(size: int | None) -> None:
    stream, out = replay(STREAM, size)
    assert stream.done and stream.error_code is None
    assert stream.usage == Usage(14, 0, 7, 0)
    assert stream.response_id == ANSWER["id"]
    held = json.loads(stream.held)
    assert held["type"] == "response.completed" and held["response"]["model"] == SLUG
    # Everything before the last event: the provider's bytes, but for the model's name.
    sent, _ = STREAM.rsplit(b"event: response.completed", 1)
    assert out == sent.replace(b'"model":"' + UPSTREAM.encode(), b'"model":"' + SLUG.encode())
    transcript = out + ENDPOINT.stream_tail(stream.held, "0.5")
    events = [json.loads(data) for _, data in iter_sse(transcript.decode())]
    for event in events:
        assert_openai(event, "ResponseStreamEvent")
    assert events[-1]["response"]["credits_used"] == 0.5
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_an_error_event_is_held_with_its_code() -> None:
    head = STREAM.split(b"event: response.output_text.done")[0]
    error = (
        b"event: error\n"
        b'data: {"type":"error","sequence_number":9,"code":"server_error","message":"boom","param":null}\n\n'
    )
    stream, out = replay(head + error, None)
    assert stream.done and stream.error_code == "server_error"
    assert json.loads(stream.held)["code"] == "server_error"
    assert b"event: error" not in out


def test_a_failed_response_is_held_with_its_code() -> None:
    failed = {**ANSWER, "status": "failed", "error": {"code": "server_error", "message": "x"}, "usage": None}
    event = {"type": "response.failed", "sequence_number": 2, "response": failed}
    stream, _ = replay(
        STREAM.split(b"event: response.output_item.added")[0]
        + b"event: response.failed\ndata: "
        + orjson.dumps(event)
        + b"\n\n",
        7,
    )
    assert stream.done and stream.error_code == "server_error" and stream.usage is None


@pytest.mark.parametrize("cut", [3, 9])
def test_a_cut_stream_gets_an_error_numbered_after_the_last_event(cut: int) -> None:
    events = STREAM.split(b"\n\n")
    stream, _ = replay(b"\n\n".join(events[:cut]) + b"\n\n", None)
    assert not stream.done
    last = ENDPOINT.stream_error(502, "upstream_error", "The provider ended the stream early.", stream)
    assert json.loads(last)["sequence_number"] == cut
