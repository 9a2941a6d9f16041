"""``POST /v1/messages/count_tokens``: Anthropic's token count of a Messages request, for every model.

Anthropic providers count it themselves (passed through: translators/count_tokens_anthropic.py).
For every other provider the gateway answers at once with its own estimate, the one that
reserves a Messages request's tokens (``anthropic_messages.prompt_tokens``,
ext_proc/token_estimate.py), marked so: ``{"input_tokens": N, "estimated": true}`` (an extra
field, which Anthropic's SDK keeps on ``MessageTokensCount`` and ignores otherwise).

Counting is free (Anthropic's is too): nothing is priced, and the request still gets its usage
record. It asks the model's own provider, never a fallback chain: a count is not an answer
another model could give. Errors are in Anthropic's shape, as on ``/v1/messages``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from .anthropic_messages import AnthropicEndpoint, check_messages_request, prompt_tokens


class CountTokens(AnthropicEndpoint):
    __slots__ = ()

    name = "count_tokens"
    paths = ("/v1/messages/count_tokens",)
    operation = "count_tokens"
    meters = ()
    fallback = False
    local_for = frozenset({"openai", "gemini"})

    def check(self, body: dict[str, Any]) -> None:
        check_messages_request(body, require_max_tokens=False)

    def local_answer(self, body: Mapping[str, Any]) -> bytes:
        return orjson.dumps({"input_tokens": prompt_tokens(body), "estimated": True})

    def prompt_tokens(self, body: Mapping[str, Any]) -> int:
        return 0  # a count uses no tokens: nothing to reserve, nothing to charge

    def input_tokens(self, body: Mapping[str, Any]) -> int:
        return 0


ENDPOINT = CountTokens()
