"""The legacy completions and moderations endpoints: their checks, estimates, price and last chunk."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest

from ext_proc.endpoints.base import LastEvent
from ext_proc.endpoints.completions import ENDPOINT as COMPLETIONS
from ext_proc.endpoints.moderations import ENDPOINT as MODERATIONS
from ext_proc.errors import GatewayError
from ext_proc.metering import Prices, credits
from ext_proc.translators.base import Usage
from tests.conformance import openai_errors


def test_declares_them() -> None:
    assert (COMPLETIONS.name, COMPLETIONS.paths, COMPLETIONS.streams, COMPLETIONS.operation) == (
        "completions",
        ("/v1/completions",),
        True,
        "text_completion",
    )
    assert (MODERATIONS.name, MODERATIONS.paths, MODERATIONS.streams) == (
        "moderations",
        ("/v1/moderations",),
        False,
    )


def test_stream_options_need_a_stream() -> None:
    COMPLETIONS.check(
        {"model": "m", "prompt": "x", "stream": True, "stream_options": {"include_usage": True}}
    )
    with pytest.raises(GatewayError) as info:
        COMPLETIONS.check({"model": "m", "prompt": "x", "stream_options": {"include_usage": True}})
    assert (info.value.code, info.value.param) == ("invalid_value", "stream_options")


@pytest.mark.parametrize(
    ("body", "streaming"),
    [
        ({}, (False, False)),
        ({"stream": True}, (True, False)),
        ({"stream": True, "stream_options": {"include_usage": True}}, (True, True)),
    ],
)
def test_streaming(body: dict[str, Any], streaming: tuple[bool, bool]) -> None:
    assert COMPLETIONS.streaming(body) == streaming


def test_completion_estimates() -> None:
    assert COMPLETIONS.prompt_tokens({"prompt": "x" * 9}) == 3
    assert COMPLETIONS.prompt_tokens({"prompt": ["x" * 4, "y" * 8]}) == 3
    assert COMPLETIONS.prompt_tokens({"prompt": [1, 2, 3]}) == 3
    assert COMPLETIONS.prompt_tokens({"prompt": [[1, 2], [3]]}) == 3
    assert COMPLETIONS.output_allowance({"prompt": "x"}) == 16  # OpenAI's default max_tokens
    assert COMPLETIONS.output_allowance({"prompt": ["a", "b"], "max_tokens": 10, "n": 2, "best_of": 3}) == 60
    chunk = {"choices": [{"text": "Hello", "index": 0}, {"text": "abc", "index": 1}]}
    assert COMPLETIONS.served_chars(chunk) == 8


def test_the_last_chunk_the_gateway_writes() -> None:
    final = orjson.loads(COMPLETIONS.stream_last(LastEvent("cmpl-1", "req", 7, "m", None)))
    assert not openai_errors(final, "CreateCompletionResponse")
    assert final["choices"][0]["finish_reason"] == "stop" and final["object"] == "text_completion"
    usage = orjson.loads(COMPLETIONS.stream_last(LastEvent("", "req", 7, "m", Usage(2, 0, 3))))
    assert not openai_errors(usage, "CreateCompletionResponse")
    assert (usage["id"], usage["choices"], usage["usage"]["total_tokens"]) == ("cmpl-req", [], 5)


def test_moderation_estimates_and_price() -> None:
    assert MODERATIONS.prompt_tokens({"input": "x" * 10}) == 3
    parts = [
        {"type": "text", "text": "x" * 8},
        {"type": "image_url", "image_url": {"url": "https://i.test/a.png"}},
    ]
    assert MODERATIONS.prompt_tokens({"input": parts}) == 2 + 256
    assert MODERATIONS.prompt_tokens({"input": ["abcd", "efgh"]}) == 2
    prices = Prices(Decimal("1"), None, Decimal("100"))
    assert credits(Usage(1000, 0, 50), prices, Decimal(1), MODERATIONS.meters) == Decimal("0.001")
