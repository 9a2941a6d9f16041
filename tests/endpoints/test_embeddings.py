"""The embeddings endpoint: never streamed, input estimated from the text or token ids sent, input priced."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from ext_proc.endpoints.base import NOT_STREAMED, RequestBody
from ext_proc.endpoints.embeddings import ENDPOINT as EMBEDDINGS
from ext_proc.metering import Prices, credits
from ext_proc.translators.base import Usage


def test_declares_a_json_post_never_streamed() -> None:
    assert (EMBEDDINGS.name, EMBEDDINGS.paths, EMBEDDINGS.methods) == (
        "embeddings",
        ("/v1/embeddings",),
        {"POST"},
    )
    assert EMBEDDINGS.request_body is RequestBody.JSON and not EMBEDDINGS.streams
    assert EMBEDDINGS.streaming({"input": "x", "stream": True}) == NOT_STREAMED
    EMBEDDINGS.check({"input": "x", "temperature": 9})  # chat's checks are not embeddings'


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        # moved from test_limits.py, where limits.estimate_tokens was
        ({"input": ["abcd" * 10, "efgh"]}, 11),
        ({"input": [[1, 2, 3], [4]]}, 4),
        ({}, 1),
        ({"input": "abcde"}, 2),
        ({"input": ["ab", 7]}, 1 + 1),  # a stray token id counts 1
        ({"input": {"not": "valid"}}, 1),
        ({"messages": [{"role": "user", "content": "a" * 400}]}, 1),  # not an embeddings body
    ],
)
def test_reservation_is_the_input(body: dict[str, Any], tokens: int) -> None:
    assert EMBEDDINGS.reservation(body) == tokens
    assert EMBEDDINGS.input_tokens(body) == tokens
    assert EMBEDDINGS.output_allowance(body) == 0


def test_credits_are_input_tokens_only() -> None:
    prices = Prices(Decimal("0.02"), None, Decimal("5"), Decimal("1"))
    usage = Usage(input_tokens=1_000_000, output_tokens=7, images=1)
    assert credits(usage, prices, Decimal(1), EMBEDDINGS.meters) == Decimal("0.02")
    assert EMBEDDINGS.served_chars({"object": "list", "data": [{"embedding": [0.1]}]}) == 0
