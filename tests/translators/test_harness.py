"""The checks these tests lean on must be able to fail."""

from __future__ import annotations

from typing import Any

import pytest

from tests.translators._support import assert_anthropic_request, assert_gemini_request, check_chunks

BAD_ANTHROPIC: list[dict[str, Any]] = [
    {"model": "m", "messages": [{"role": "user", "content": "x"}]},  # no max_tokens
    {
        "model": "m",
        "max_tokens": 1,
        "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}],
    },
    {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}], "seed": 1},
    {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": ""}]},
]
BAD_GEMINI: list[dict[str, Any]] = [
    {"contents": [{"role": "system", "parts": [{"text": "x"}]}]},
    {"contents": [{"role": "user", "parts": []}]},
    {"contents": [{"role": "user", "parts": [{"text": "x"}]}], "generationConfig": {"n": 2}},
]
BAD_CHUNKS: list[dict[str, Any]] = [
    {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
     "choices": [{"index": 0, "delta": {}, "finish_reason": "done"}]},
    {"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": []},
    {"error": {"message": "no type"}},
]  # fmt: skip


@pytest.mark.parametrize("body", BAD_ANTHROPIC)
def test_anthropic_validator_rejects(body: dict[str, Any]) -> None:
    with pytest.raises(AssertionError):
        assert_anthropic_request(body)


@pytest.mark.parametrize("body", BAD_GEMINI)
def test_gemini_validator_rejects(body: dict[str, Any]) -> None:
    with pytest.raises(AssertionError):
        assert_gemini_request(body)


@pytest.mark.parametrize("chunk", BAD_CHUNKS)
def test_chunk_check_rejects(chunk: dict[str, Any]) -> None:
    with pytest.raises(AssertionError):
        check_chunks([chunk])
