"""``POST /v1/images/generations``: OpenAI's Image generation API. Never streamed.

Priced per image made, plus the tokens a provider reports (``gpt-image-1`` reports
them, DALL·E does not). Its input is estimated from the ``prompt`` (ext_proc/token_estimate.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ext_proc.metering import images_cost, input_tokens_cost, output_tokens_cost
from ext_proc.token_estimate import tokens_for_chars

from .base import Endpoint


class Images(Endpoint):
    __slots__ = ()

    name = "images"
    paths = ("/v1/images/generations",)
    operation = "image_generation"
    meters = (input_tokens_cost, output_tokens_cost, images_cost)

    def prompt_tokens(self, body: Mapping[str, Any]) -> int:
        prompt = body.get("prompt")
        return tokens_for_chars(len(prompt)) if isinstance(prompt, str) else 0


ENDPOINT = Images()
