"""The merge of an emulated n > 1 (ext_proc/extra_choices.py; through Envoy: tests/e2e/test_emulated_n.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from ext_proc import extra_choices
from ext_proc.errors import GatewayError
from tests.conformance import assert_openai


def _answer(text: str, prompt: int, completion: int, reasoning: int = 0) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{text}",
        "object": "chat.completion",
        "created": 1,
        "model": "claude-sonnet-4-5",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 1},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        },
    }


def test_which_requests_are_emulated():
    assert extra_choices.emulated({"n": 1}, ["anthropic"]) == 0
    assert extra_choices.emulated({}, ["anthropic"]) == 0
    assert extra_choices.emulated({"n": 3}, ["openai"]) == 0  # OpenAI gives n itself
    assert extra_choices.emulated({"n": 8}, ["gemini"]) == 0  # candidateCount
    assert extra_choices.emulated({"n": 9}, ["gemini"]) == 9
    assert extra_choices.emulated({"n": 2}, ["anthropic"]) == 2
    assert extra_choices.emulated({"n": 2}, ["openai", "anthropic"]) == 2  # a chain with an Anthropic target
    assert extra_choices.emulated({"n": 16}, ["anthropic"]) == 16
    with pytest.raises(GatewayError) as refused:
        extra_choices.emulated({"n": 17}, ["anthropic"])
    assert (refused.value.status, refused.value.code, refused.value.param) == (400, "invalid_value", "n")
    assert extra_choices.emulated({"n": 100}, ["openai"]) == 0  # OpenAI's own 128 stands there
    assert extra_choices.one_choice({"model": "m", "n": 3, "stream": True}) == {"model": "m", "stream": True}


def test_answers_merge_into_one_with_indexes_and_summed_usage():
    first = orjson.dumps(_answer("zero", 10, 5, reasoning=2))
    merged = orjson.loads(
        extra_choices.merged_answer(
            first, [(1, _answer("one", 10, 6)), (2, _answer("two", 10, 7, reasoning=1))]
        )
    )
    assert_openai(merged, "CreateChatCompletionResponse")
    assert merged["id"] == "chatcmpl-zero" and merged["model"] == "claude-sonnet-4-5"
    assert [(c["index"], c["message"]["content"]) for c in merged["choices"]] == [
        (0, "zero"),
        (1, "one"),
        (2, "two"),
    ]
    assert merged["usage"] == {
        "prompt_tokens": 30,
        "completion_tokens": 18,
        "total_tokens": 48,
        "prompt_tokens_details": {"cached_tokens": 3},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }


def test_a_choice_not_served_leaves_a_gap_and_choice_0s_failure_leaves_the_others():
    """Each served choice keeps its index, whichever failed; usage sums the served ones only."""
    first = orjson.dumps(_answer("zero", 10, 5))
    gap = orjson.loads(extra_choices.merged_answer(first, [(2, _answer("two", 10, 7))]))
    assert [(c["index"], c["message"]["content"]) for c in gap["choices"]] == [(0, "zero"), (2, "two")]
    assert gap["usage"]["completion_tokens"] == 12
    other = {**_answer("one", 10, 6), "id": "chatcmpl-one", "model": "gemini-2-5-flash"}
    without = orjson.loads(extra_choices.merged_answer(None, [(1, other), (2, _answer("two", 10, 7))]))
    assert_openai(without, "CreateChatCompletionResponse")
    assert (without["id"], without["model"]) == ("chatcmpl-one", "gemini-2-5-flash")  # the first served
    assert [c["index"] for c in without["choices"]] == [1, 2]
    assert without["usage"]["prompt_tokens"] == 20 and without["usage"]["completion_tokens"] == 13


def test_an_answered_choice_is_served_and_one_without_a_choice_is_not():
    choice = extra_choices.ExtraChoice(1)
    choice.answered(_answer("one", 10, 6), Decimal("0.5"), "claude-sonnet-4-5")
    assert choice.served and choice.error is None and choice.credits == Decimal("0.5")
    empty = extra_choices.ExtraChoice(2)
    empty.answered({"choices": []}, Decimal(0), "claude-sonnet-4-5")
    assert not empty.served and empty.status == 502 and b"upstream_error" in (empty.error or b"")


def test_usage_that_is_not_a_count_is_never_added():
    total = extra_choices.add_usage({}, {"prompt_tokens": 3, "completion_tokens": True, "x": "7"})
    assert extra_choices.add_usage(total, None) == {"prompt_tokens": 3}


def test_a_streamed_choice_is_reindexed_and_its_usage_and_charge_kept_aside():
    choice = extra_choices.ExtraChoice(2)
    chunk = {
        "id": "chatcmpl-other",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "claude-sonnet-4-5",
        "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
    }
    out = choice.event(orjson.dumps(chunk))
    assert out is not None
    event = extra_choices.as_event(out, "chatcmpl-first", "claude-sonnet-4-5")
    doc = orjson.loads(event.removeprefix(b"data: "))
    assert_openai(doc, "CreateChatCompletionStreamResponse")
    assert (doc["id"], doc["choices"][0]["index"]) == ("chatcmpl-first", 2)
    usage = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    # the usage chunk: nothing for the client, its usage and exact charge kept
    raw = orjson.dumps({**chunk, "choices": [], "usage": usage})[:-1] + b',"credits_used":0.0000123456789}'
    assert choice.event(raw) is None
    assert choice.usage == usage and choice.credits == Decimal("0.0000123456789")
    assert choice.event(b"[DONE]") is None
    assert choice.served and choice.model == "claude-sonnet-4-5"
    # a stream that failed after serving: its error event carries its charge, counted too
    failed = b'{"error":{"code":"upstream_error","message":"x"},"credits_used":0.25}'
    assert choice.event(failed) is None
    assert choice.error == b'{"error":{"code":"upstream_error","message":"x"}}'
    assert choice.credits == Decimal("0.25") and choice.served


def test_the_usage_chunk_carries_every_choices_usage():
    last = orjson.dumps({"id": "c", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}})
    summed = orjson.loads(
        extra_choices.with_usage(last, [{"prompt_tokens": 4, "completion_tokens": 3}, None])
    )
    assert summed["usage"] == {"prompt_tokens": 8, "completion_tokens": 5}
    final = orjson.dumps({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    assert extra_choices.with_usage(final, [{"prompt_tokens": 4}]) == final
