"""``POST /v1/embeddings``: OpenAI's Embeddings API. Never streamed; only input tokens are priced.

Its input is estimated from the text sent (ext_proc/token_estimate.py); pre-tokenized
input (arrays of token ids) counts its ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ext_proc.metering import input_tokens_cost
from ext_proc.token_estimate import tokens_for_chars

from .base import Endpoint


class Embeddings(Endpoint):
    __slots__ = ()

    name = "embeddings"
    paths = ("/v1/embeddings",)
    operation = "embeddings"
    meters = (input_tokens_cost,)

    def prompt_tokens(self, body: Mapping[str, Any]) -> int:
        inp = body.get("input")
        if isinstance(inp, str):
            return tokens_for_chars(len(inp))
        if not isinstance(inp, list):
            return 0
        chars = 0
        tokens = 0
        for item in inp:
            if isinstance(item, str):
                chars += len(item)
            elif isinstance(item, list):
                tokens += len(item)
            else:
                tokens += 1
        return tokens + tokens_for_chars(chars)


ENDPOINT = Embeddings()
