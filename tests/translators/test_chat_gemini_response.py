"""Gemini chat responses and streams → OpenAI, on recorded and hand-made fixtures."""

from __future__ import annotations

import json
from dataclasses import replace

import orjson
import pytest

from ext_proc.translators.base import ResponseContext, TranslatedResponse, Usage
from ext_proc.translators.chat_gemini import ChatGemini
from tests.conformance import assert_openai
from tests.translators._support import (
    OWN_FIXTURES,
    accumulate,
    assert_provider_sse,
    check_completed,
    check_failed,
    completion_of,
    each_split,
    first_event,
    own_fixture,
    shared_fixture,
    sse_payloads,
    stream_events,
    usage_chunks,
    usage_doc,
)

CTX = ResponseContext("gemini-2-5-flash", "gemini-2.5-flash", 1_760_000_000)
CTX_USAGE = ResponseContext("gemini-2-5-flash", "gemini-2.5-flash", 1_760_000_000, include_usage=True)


def fixture_text(raw: bytes) -> str:
    """The visible (non-thought) text of a Gemini stream, read independently of the translator."""
    out = []
    for line in raw.decode().splitlines():
        if line.startswith("data: "):
            for cand in json.loads(line[6:]).get("candidates", []):
                for part in cand.get("content", {}).get("parts", []):
                    if "text" in part and not part.get("thought"):
                        out.append(part["text"])
    return "".join(out)


# fixture, prompt, completion (candidates + thoughts), reasoning, finish, tools [(name, arguments)]
STREAMS: list[tuple[str, int, int, int, str, list[tuple[str, str]]]] = [
    ("gemini_firebase_streaming-failure-recitation-no-content.sse", 9, 261, 0, "content_filter", []),
    ("gemini_firebase_streaming-success-basic-reply-long.sse", 10, 1996, 0, "stop", []),
    ("gemini_firebase_streaming-success-basic-reply-short.sse", 7, 10, 0, "stop", []),
    ("gemini_firebase_streaming-success-empty-parts.sse", 16, 1307, 0, "stop", []),
    ("gemini_firebase_streaming-success-no-content-parts.sse", 34, 1370, 0, "stop", []),
    ("gemini_firebase_streaming-success-thinking-function-call-thought-summary-signature.sse",
     38, 174, 168, "tool_calls", [("now", "{}")]),
    ("gemini_firebase_streaming-success-thinking-reply-thought-summary.sse", 10, 588, 540, "stop", []),
]  # fmt: skip


@each_split
@pytest.mark.parametrize(
    ("name", "prompt", "completion", "reasoning", "finish", "tools"), STREAMS, ids=[s[0] for s in STREAMS]
)
def test_recorded_stream(
    name: str,
    prompt: int,
    completion: int,
    reasoning: int,
    finish: str,
    tools: list[tuple[str, str]],
    size: int | None,
) -> None:
    raw = shared_fixture(name)
    stream = ChatGemini().stream(CTX_USAGE)
    events = stream_events(stream, raw, size)
    check_completed(stream, events, CTX_USAGE)
    first = first_event(raw)
    if "responseId" in first:
        assert stream.response_id == "chatcmpl-" + first["responseId"]

    (choice,) = accumulate(events).values()
    assert choice["content"] == fixture_text(raw)
    assert choice["finish"] == finish
    assert [(t["name"], t["arguments"]) for t in choice["tools"].values()] == tools
    assert all(t["id"].startswith("call_") for t in choice["tools"].values())

    assert stream.usage == Usage(prompt, 0, completion, reasoning)
    assert events[-1]["choices"] == []
    assert usage_chunks(events) == [usage_doc(prompt, 0, completion, reasoning)]


def test_stream_tool_call_fragments_and_signature() -> None:
    raw = shared_fixture(
        "gemini_firebase_streaming-success-thinking-function-call-thought-summary-signature.sse"
    )
    events = stream_events(ChatGemini().stream(CTX), raw, None)
    calls = [c for e in events for ch in e["choices"] for c in ch["delta"].get("tool_calls") or []]
    head, tail = calls
    assert (
        head["index"] == 0
        and head["type"] == "function"
        and head["function"] == {"name": "now", "arguments": ""}
    )
    assert head["extra_content"]["google"]["thought_signature"].startswith("CiIBVKhc7vB+")
    assert tail == {"index": 0, "function": {"arguments": "{}"}}


def test_prompt_blocked_in_stream() -> None:
    stream = ChatGemini().stream(CTX_USAGE)
    raw = shared_fixture("gemini_firebase_streaming-failure-prompt-blocked-safety.sse")
    (event,) = events = stream_events(stream, raw, 7)
    assert check_failed(stream, events, "content_filter") == {}
    assert "SAFETY" in event["error"]["message"]


def test_usage_chunk_only_when_asked() -> None:
    stream = ChatGemini().stream(CTX)
    events = stream_events(
        stream, shared_fixture("gemini_firebase_streaming-success-basic-reply-short.sse"), None
    )
    assert usage_chunks(events) == []
    assert stream.usage == Usage(7, 0, 10, 0)


@each_split
def test_two_candidates_stream(size: int | None) -> None:
    stream = ChatGemini().stream(CTX_USAGE)
    events = stream_events(stream, own_fixture("gemini_two_candidates.sse"), size)
    choices = accumulate(events)
    assert {i: (c["role"], c["content"], c["finish"]) for i, c in choices.items()} == {
        0: ("assistant", "Red apple.", "stop"),
        1: ("assistant", "Blue sky at noon", "length"),
    }
    assert stream.response_id == "chatcmpl-twoCand01" and stream.done
    assert usage_chunks(events) == [usage_doc(12, 4, 39, 30)]
    assert stream.usage == Usage(12, 4, 39, 30)


@pytest.mark.parametrize("one_call", [False, True])
def test_parallel_calls_stream(one_call: bool) -> None:
    request = {"parallel_tool_calls": False} if one_call else {}
    stream = ChatGemini().stream(replace(CTX, request=request))
    (choice,) = accumulate(stream_events(stream, own_fixture("gemini_parallel_calls.sse"), 7)).values()
    assert choice["content"] == "Checking both."
    cities = [json.loads(t["arguments"])["city"] for t in choice["tools"].values()]
    assert cities == (["Paris"] if one_call else ["Paris", "Oslo"])
    assert len({t["id"] for t in choice["tools"].values()}) == len(cities)
    assert choice["finish"] == "tool_calls"
    assert stream.usage == Usage(45, 0, 20, 0)  # tool-use prompt tokens are prompt tokens


@each_split
def test_error_inside_stream(size: int | None) -> None:
    stream = ChatGemini().stream(CTX_USAGE)
    events = stream_events(stream, own_fixture("gemini_error_midstream.sse"), size)
    assert check_failed(stream, events, "upstream_unavailable")[0]["content"] == "Once upon"


def test_truncated_stream_ends_with_an_error() -> None:
    stream = ChatGemini().stream(CTX_USAGE)
    out = stream.feed(own_fixture("gemini_truncated.sse"))  # no trailing blank line: flushed by finish()
    assert out == b"" and not stream.done
    events = sse_payloads(stream.finish() + b"data: " + (stream.held or b"") + b"\n\n")
    assert check_failed(stream, events, "upstream_error")[0]["content"] == "Once upon"
    assert stream.usage == Usage(9, 0, 2, 0)


def test_own_fixtures_are_valid_provider_streams() -> None:
    for path in sorted(OWN_FIXTURES.glob("gemini_*.sse")):
        assert_provider_sse("gemini", path.read_bytes())


# ---------------------------------------------------------------- non-stream


def respond(name: str, shared: bool = True) -> TranslatedResponse:
    raw = shared_fixture(name) if shared else own_fixture(name)
    return ChatGemini().response(200, raw, CTX)


def test_unary_reply() -> None:
    res = respond("gemini_firebase_unary-success-basic-reply-short.json")
    out = completion_of(res, CTX)
    message = out["choices"][0]["message"]
    assert (
        message["content"].startswith("Google's headquarters")
        and out["choices"][0]["finish_reason"] == "stop"
    )
    assert out["usage"] == usage_doc(7, 0, 22, 0)
    assert res.usage == Usage(7, 0, 22, 0)


def test_unary_function_call_with_thoughts() -> None:
    res = respond("gemini_firebase_unary-success-thinking-function-call-thought-summary-signature.json")
    out = completion_of(res, CTX)
    assert out["id"] == "chatcmpl-38CHaLjMG6TujrEPtvTiuQk"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None  # the thought summary is not the answer
    (call,) = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "now", "arguments": "{}"}
    assert call["extra_content"]["google"]["thought_signature"].startswith("CtQOAVSoXO74")
    assert res.usage == Usage(38, 0, 509, 501)


def test_unary_safety_finish() -> None:
    res = respond("gemini_firebase_unary-failure-finish-reason-safety.json")
    out = completion_of(res, CTX)
    assert out["choices"][0]["finish_reason"] == "content_filter"
    assert out["choices"][0]["message"]["content"] == "Safety error incoming in 5, 4, 3, 2..."
    assert res.usage == Usage(7, 0, 20, 0)


def test_two_candidates() -> None:
    res = respond("gemini_two_candidates.json", shared=False)
    out = completion_of(res, CTX)
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [
        (0, "Red apple.", "stop"),
        (1, "Blue sky", "length"),
    ]
    assert out["usage"] == usage_doc(15, 4, 39, 30)
    assert res.usage == Usage(15, 4, 39, 30)


def test_logprobs() -> None:
    out = completion_of(respond("gemini_logprobs.json", shared=False), CTX)
    assert out["choices"][0]["logprobs"] == {
        "content": [
            {"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": [
                {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                {"token": "Hello", "logprob": -2.5, "bytes": list(b"Hello")},
            ]},
            {"token": " there", "logprob": -0.3, "bytes": list(b" there"), "top_logprobs": [
                {"token": " there", "logprob": -0.3, "bytes": list(b" there")},
                {"token": "!", "logprob": -1.9, "bytes": [33]},
            ]},
        ],
        "refusal": None,
    }  # fmt: skip


def test_parallel_calls_cut_to_one_when_asked() -> None:
    raw = own_fixture("gemini_parallel_calls.sse").split(b"data: ", 1)[1]
    translator = ChatGemini()
    both = orjson.loads(translator.response(200, raw, CTX).body)
    one = orjson.loads(
        translator.response(200, raw, replace(CTX, request={"parallel_tool_calls": False})).body
    )
    assert len(both["choices"][0]["message"]["tool_calls"]) == 2
    assert len(one["choices"][0]["message"]["tool_calls"]) == 1
    assert_openai(one, "CreateChatCompletionResponse")


def test_blocked_prompt_is_a_400() -> None:
    res = respond("gemini_prompt_blocked.json", shared=False)
    out = orjson.loads(res.body)
    assert_openai(out, "ErrorResponse")
    assert (res.status, res.error_code, out["error"]["code"]) == (400, "content_filter", "content_filter")
    assert "PROHIBITED_CONTENT" in out["error"]["message"]
    assert res.usage == Usage(14, 0, 0, 0)
