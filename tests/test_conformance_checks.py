"""The project's own conformance validators accept real payloads and reject broken ones: a
validator that accepted everything would make every other conformance assertion worthless."""

from __future__ import annotations

import json

import pytest

from simulators import conformance
from tests.conformance import FIXTURES_DIR, openai_errors, providers

GOOD_CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "system_fingerprint": None,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
}
BAD_CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": "yesterday",
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "bot", "content": "Hi"}, "finish_reason": "end_turn"}],
}
ANTHROPIC_GOOD = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 256,
    "temperature": 0.2,
    "messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "w", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "18C"}]},
    ],
}
ANTHROPIC_OPENAI_LEAK = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 256,
    "n": 1,
    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "name": "bob"}]}],
}
GEMINI_GOOD = {
    "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
    "generationConfig": {"maxOutputTokens": 256, "stopSequences": ["END"]},
}
GEMINI_BAD = {
    "contents": [{"role": "system", "parts": [{"text": "be terse"}]}, {"role": "user", "parts": []}],
    "generationConfig": {"max_tokens": 256},
}
ANTHROPIC_STREAM_OUT_OF_ORDER = (
    'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message",'
    '"role":"assistant","content":[],"model":"c","stop_reason":null,"stop_sequence":null,'
    '"usage":{"output_tokens":1}}}\n\n'
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    '"delta":{"type":"text_delta","text":"Hi"}}\n\n'
)
GEMINI_STREAM_BAD = (
    'data: {"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"assistant"}}]}\n\n'
    'data: {"choices":[]}\n\ndata: [DONE]\n\n'
)


def test_openai_schemas_tell_good_from_bad():
    assert openai_errors(GOOD_CHAT, "CreateChatCompletionResponse") == []
    errors = " ".join(openai_errors(BAD_CHAT, "CreateChatCompletionResponse"))
    assert "created" in errors and "role" in errors and "finish_reason" in errors
    assert openai_errors({"error": {"message": "x", "type": "t"}}, "ErrorResponse") == []  # lenient


def test_openai_requests_are_strict_about_undeclared_fields():
    spec = conformance.OpenAISpec()
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert spec.request_problems("CreateChatCompletionRequest", body) == []
    problems = spec.request_problems("CreateChatCompletionRequest", {**body, "not_a_param": 1})
    assert [p.rule for p in problems] == ["unevaluatedProperties"]


def test_anthropic_requests():
    assert providers().anthropic_request(ANTHROPIC_GOOD) == []
    problems = " ".join(providers().anthropic_request(ANTHROPIC_OPENAI_LEAK))
    assert "'n'" in problems and "name" in problems
    orphan = {**ANTHROPIC_GOOD, "messages": [ANTHROPIC_GOOD["messages"][0], ANTHROPIC_GOOD["messages"][2]]}
    assert "unknown tool_use_id" in " ".join(providers().anthropic_request(orphan))


def test_gemini_requests():
    assert providers().gemini_request(GEMINI_GOOD) == []
    problems = " ".join(providers().gemini_request(GEMINI_BAD))
    assert "max_tokens" in problems or "empty parts" in problems
    assert "'system'" in problems


@pytest.mark.parametrize(
    "name", sorted(p.name for p in FIXTURES_DIR.iterdir() if p.name.endswith(".sse")), ids=str
)
def test_recorded_provider_streams_are_valid(name):
    check = "anthropic-sse" if name.startswith("anthropic") else "gemini-sse"
    problems = providers().response(check, (FIXTURES_DIR / name).read_bytes())
    assert problems == [], problems


def test_broken_provider_streams_are_rejected():
    anthropic = " ".join(providers().response("anthropic-sse", ANTHROPIC_STREAM_OUT_OF_ORDER))
    assert "input_tokens" in anthropic and "not open" in anthropic and "no message_stop" in anthropic
    gemini = " ".join(providers().response("gemini-sse", GEMINI_STREAM_BAD))
    assert "[DONE]" in gemini and "'assistant'" in gemini and "choices" in gemini


def test_recorded_provider_responses_are_valid():
    message = json.loads((FIXTURES_DIR / "anthropic_recorded_message.json").read_bytes())
    assert providers().response("anthropic-response", json.dumps(message)) == []
    assert providers().response("anthropic-response", json.dumps({**message, "role": "user"})) != []
    gemini = (FIXTURES_DIR / "gemini_firebase_unary-success-basic-reply-short.json").read_bytes()
    assert providers().response("gemini-response", gemini) == []
    assert providers().response("gemini-response", b'{"candidates": 3}') != []
