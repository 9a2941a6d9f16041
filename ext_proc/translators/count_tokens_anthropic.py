"""Anthropic's token count ⇄ Anthropic: ``POST /v1/messages/count_tokens`` passed through.

The body goes on with the provider's model name (``messages_anthropic.upstream``); the
answer (``{"input_tokens": N}``) comes back as Anthropic gave it. Counting is free at
Anthropic and at the gateway: the usage is none. Providers that cannot count get the
gateway's estimate instead (``endpoints/anthropic_count_tokens.py``), with no pair here.
"""

from __future__ import annotations

from typing import Any

from .base import ResponseContext, Target, TranslatedResponse, Translator, UpstreamRequest, Usage
from .messages_anthropic import answer, upstream


class CountTokensAnthropic(Translator):
    __slots__ = ()

    endpoint = "count_tokens"
    wire_format = "anthropic"

    def request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        return upstream("/v1/messages/count_tokens", body, target)

    def response(self, status: int, body: bytes, ctx: ResponseContext) -> TranslatedResponse:
        doc = answer(status, body, ctx)
        if isinstance(doc, TranslatedResponse):
            return doc
        return TranslatedResponse(status, body, Usage())


TRANSLATOR = CountTokensAnthropic()
