"""OpenAI legacy Completions and Moderations ⇄ the OpenAI wire format: passed through with ``model``
rewritten; a completion stream always asks for usage and holds its last chunk for credits, as chat's
does; a moderation reports no usage (the exchange charges the estimate)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest

from ext_proc.translators.base import ResponseContext, Target, Usage
from ext_proc.translators.completions_openai import CompletionsOpenAI
from ext_proc.translators.moderations_openai import ModerationsOpenAI
from tests.conformance import assert_openai, openai_errors
from tests.translators._support import each_split, own_fixture, replay, sse_payloads

SLUG = "instruct"
UPSTREAM = "gpt-3.5-turbo-instruct"
CTX = ResponseContext(SLUG, UPSTREAM, 1_760_000_000)
TARGET = Target("openai", "/v1", "sk-provider", UPSTREAM)


def assert_completion_chunk(chunk: dict[str, Any]) -> None:
    """A ``text_completion`` chunk, as the spec says but for ``finish_reason: null`` before the last
    chunk (the spec's schema is the whole answer's; OpenAI streams null until the end)."""
    problems = [p for p in openai_errors(chunk, "CreateCompletionResponse") if "finish_reason: None" not in p]
    assert not problems, problems


def test_a_completion_request_passes_with_usage_asked_on_streams() -> None:
    body = {"model": SLUG, "prompt": "Say hi", "max_tokens": 16, "stream": True}
    upstream = CompletionsOpenAI().request(dict(body), TARGET)
    assert upstream.path == "/v1/completions"
    out = orjson.loads(upstream.body)
    assert out == {**body, "model": UPSTREAM, "stream_options": {"include_usage": True}}
    assert_openai(out, "CreateCompletionRequest")


def test_a_completion_answer_names_the_slug_and_its_usage_is_read() -> None:
    doc = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": UPSTREAM,
        "choices": [{"text": "Hi!", "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    res = CompletionsOpenAI().response(200, orjson.dumps(doc), CTX)
    out = orjson.loads(res.body)
    assert_openai(out, "CreateCompletionResponse")
    assert out == {**doc, "model": SLUG} and res.usage == Usage(3, 0, 2)


@each_split
@pytest.mark.parametrize("include_usage", [False, True])
def test_a_completion_stream_holds_its_last_chunk(size: int | None, include_usage: bool) -> None:
    stream = CompletionsOpenAI().stream(replace(CTX, include_usage=include_usage))
    events = sse_payloads(replay(stream, own_fixture("openai_completion_stream.sse"), size))
    for event in events:
        assert_completion_chunk(event)
    assert stream.done and stream.usage == Usage(5, 0, 16)
    assert {e["model"] for e in events} == {SLUG}
    last = orjson.loads(stream.held or b"{}")
    if include_usage:
        assert last["choices"] == [] and last["usage"]["completion_tokens"] == 16
    else:
        assert last["choices"][0]["finish_reason"] == "length" and "usage" not in last
        assert all("usage" not in e for e in events)
    assert "".join(c["text"] for e in events for c in e["choices"]) == "\n\nHello there"


def test_a_moderation_passes_and_reports_no_usage() -> None:
    body = {"model": "mod", "input": ["I like cats", "I like dogs"]}
    upstream = ModerationsOpenAI().request(
        dict(body), replace(TARGET, upstream_model="omni-moderation-latest")
    )
    assert upstream.path == "/v1/moderations"
    out = orjson.loads(upstream.body)
    assert_openai(out, "CreateModerationRequest")
    answer = {"id": "modr-1", "model": "omni-moderation-2024-09-26", "results": []}
    res = ModerationsOpenAI().response(200, orjson.dumps(answer), replace(CTX, slug="mod"))
    assert orjson.loads(res.body)["model"] == "mod" and res.usage is None
