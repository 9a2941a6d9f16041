"""OpenAI legacy Completions ⇄ the OpenAI wire format: passed through as chat is.

``POST /v1/completions`` has chat's framing: ``model`` rewritten both ways, usage always
asked for on streams (``stream_options.include_usage``, which the legacy API takes too), and
``text_completion`` chunks passed as the provider's bytes with the last one held for
``credits_used`` (``chat_openai.OpenAIStream`` reads only ``usage``, ``finish_reason``,
``error`` and ``model``, which both APIs write alike). Only OpenAI-format providers have it.
"""

from __future__ import annotations

from .chat_openai import ChatOpenAI


class CompletionsOpenAI(ChatOpenAI):
    __slots__ = ()

    endpoint = "completions"
    path = "/completions"


TRANSLATOR = CompletionsOpenAI()
