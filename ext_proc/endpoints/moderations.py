"""``POST /v1/moderations``: OpenAI's Moderations API. Never streamed.

Only OpenAI-format providers have it (translators/moderations_openai.py); the others answer
``400 unsupported_endpoint``. OpenAI reports no usage for a moderation, so it is charged at
the model's input price on the gateway's estimate of its input (its usage record says
``usage_estimated``): the text of ``input`` (a string, strings, or text parts) counted as
ext_proc/token_estimate.py says, and 256 tokens per image part.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ext_proc.metering import input_tokens_cost
from ext_proc.token_estimate import tokens_for_chars

from .base import Endpoint

NON_TEXT_PART_TOKENS = 256


class Moderations(Endpoint):
    __slots__ = ()

    name = "moderations"
    paths = ("/v1/moderations",)
    operation = "moderation"
    meters = (input_tokens_cost,)

    def prompt_tokens(self, body: Mapping[str, Any]) -> int:
        inp = body.get("input")
        if isinstance(inp, str):
            return tokens_for_chars(len(inp))
        chars = 0
        tokens = 0
        for item in inp if isinstance(inp, list) else ():
            if isinstance(item, str):
                chars += len(item)
            elif isinstance(item, dict) and isinstance(item.get("text"), str):
                chars += len(item["text"])
            else:
                tokens += NON_TEXT_PART_TOKENS
        return tokens + tokens_for_chars(chars)


ENDPOINT = Moderations()
