"""bench/body_sizes.py drives one ext_proc connection in process with prompts of a given size."""

from __future__ import annotations

import asyncio

import orjson

from bench import body_phases
from bench.body_sizes import PROMPTS, chat_body, measure


def test_a_request_body_of_the_size_asked() -> None:
    for size in (1024, 100 * 1024, 1024 * 1024):
        assert abs(len(chat_body(size)) - size) <= 2


def test_every_request_is_answered_with_its_body_and_its_cost_counted() -> None:
    # measure() raises unless the request body's reply carried the rewritten body whole.
    result = asyncio.run(measure(200 * 1024, requests=3))
    assert result.requests == 3
    assert result.cpu_ms > 0 and result.minor_faults >= 0 and result.peak_mb >= 0


def test_every_prompt_comes_at_the_size_asked_and_the_prose_needs_unescaping() -> None:
    for prompt in PROMPTS:
        for size in (1024, 100 * 1024):
            body = chat_body(size, prompt)
            assert size - 8 <= len(body) <= size
            content = orjson.loads(body)["messages"][0]["content"]
            assert content.startswith(PROMPTS[prompt][:20])
    text = chat_body(4096, "text")
    assert b"\\n" in text and b'\\"' in text and "é".encode() in text  # escapes and Latin-1
    wide = orjson.loads(chat_body(4096, "typographic"))["messages"][0]["content"]
    assert max(map(ord, wide)) > 0xFF  # CPython stores it at 2 bytes per character


def test_a_prose_request_is_answered_with_its_body() -> None:
    result = asyncio.run(measure(200 * 1024, requests=2, prompt="typographic"))
    assert result.requests == 2


def test_the_phases_of_a_large_request_are_probed_in_order() -> None:
    probe = asyncio.run(body_phases.run(200 * 1024, "text"))
    labels = [row[0] for row in probe.rows]
    assert labels.index("JSON parse: before") < labels.index("translate: after") < labels.index("answered")
    assert all(peak >= 0 for *_, peak in probe.rows)
