"""``POST /v1/completions``: OpenAI's legacy Completions API, streamed or not.

Only OpenAI-format providers have it (translators/completions_openai.py); the others answer
``400 unsupported_endpoint``. Streams are chat's: ``text_completion`` chunks, the last one
before ``data: [DONE]`` carrying ``credits_used`` (the usage chunk with
``stream_options.include_usage``, else the final ``finish_reason`` chunk). Input and output
tokens are priced.

Tokens are estimated from the prompt (a string, strings, or token ids, which count one each)
and from the ``text`` of each choice (ext_proc/token_estimate.py); the output allowance is
``max_tokens`` (OpenAI's default for this API is 16) for each of ``max(n, best_of)`` answers
per prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ext_proc.errors import GatewayError
from ext_proc.metering import input_tokens_cost, output_tokens_cost
from ext_proc.token_estimate import tokens_for_chars
from ext_proc.translators.chat_documents import usage_doc

from .base import Endpoint, LastEvent, openai_streaming

DEFAULT_MAX_TOKENS = 16  # OpenAI's, for this API


class Completions(Endpoint):
    __slots__ = ()

    name = "completions"
    paths = ("/v1/completions",)
    streams = True
    operation = "text_completion"
    meters = (input_tokens_cost, output_tokens_cost)

    def check(self, body: dict[str, Any]) -> None:
        """``stream_options`` only with ``stream``, as OpenAI refuses it; the rest is the provider's."""
        if body.get("stream_options") is not None and body.get("stream") is not True:
            raise GatewayError(
                400,
                "invalid_value",
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
            )

    def streaming(self, body: Mapping[str, Any]) -> tuple[bool, bool]:
        return openai_streaming(body)

    def prompt_tokens(self, body: Mapping[str, Any]) -> int:
        return sum(_prompt_tokens(p) for p in _prompts(body.get("prompt")))

    def output_allowance(self, body: Mapping[str, Any]) -> int:
        limit = _positive(body.get("max_tokens"), DEFAULT_MAX_TOKENS)
        answers = max(_positive(body.get("n"), 1), _positive(body.get("best_of"), 1))
        return limit * answers * max(1, len(_prompts(body.get("prompt"))))

    def served_chars(self, doc: Any) -> int:
        """The ``text`` of each choice of a completion or of one chunk."""
        choices = doc.get("choices") if isinstance(doc, dict) else None
        if not isinstance(choices, list):
            return 0
        return sum(len(c["text"]) for c in choices if isinstance(c, dict) and isinstance(c.get("text"), str))

    def stream_last(self, last: LastEvent) -> bytes:
        doc: dict[str, Any] = {
            "id": last.response_id or "cmpl-" + last.request_id,
            "object": "text_completion",
            "created": last.created,
            "model": last.slug,
            "choices": [],
        }
        if last.usage is not None:
            doc["usage"] = usage_doc(last.usage)
        else:
            doc["choices"] = [{"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}]
        return orjson.dumps(doc)


ENDPOINT = Completions()


def _prompts(prompt: Any) -> list[Any]:
    """The prompts of a request: a string, a list of token ids, or a list of either."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [prompt]
    return prompt if isinstance(prompt, list) else []


def _prompt_tokens(prompt: Any) -> int:
    if isinstance(prompt, str):
        return tokens_for_chars(len(prompt))
    return len(prompt) if isinstance(prompt, list) else 0


def _positive(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default
