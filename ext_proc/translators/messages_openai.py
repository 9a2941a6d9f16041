"""Anthropic Messages ⇄ the OpenAI wire format (OpenAI, xAI, OpenAI-compatible servers), through chat.

The Messages request becomes a chat request (``messages_chat.py``), which ``chat_openai.py``
sends as it sends any chat request; its answer or chunks come back as Anthropic's ``Message``
or stream events. The output limit is ``max_completion_tokens`` for OpenAI itself (its
reasoning models refuse ``max_tokens``) and ``max_tokens`` for the other servers (older ones
know no other); ``thinking`` becomes ``reasoning_effort`` only for OpenAI's reasoning models
(o-series, gpt-5), which refuse it on no other model.
"""

from __future__ import annotations

import re

from . import chat_openai
from .base import Target
from .messages_chat import ViaChat

# OpenAI models that take reasoning_effort (others answer 400 to it).
_REASONING = re.compile(r"(?:o\d|gpt-5)")


class MessagesOpenAI(ViaChat):
    __slots__ = ()

    wire_format = "openai"
    chat = chat_openai.TRANSLATOR

    def max_tokens_field(self, target: Target) -> str:
        return "max_completion_tokens" if target.kind == "openai" else "max_tokens"

    def reasoning(self, target: Target) -> bool:
        return target.kind == "openai" and _REASONING.match(target.upstream_model) is not None


TRANSLATOR = MessagesOpenAI()
