"""The Responses API ⇄ Anthropic's Messages API, through the Anthropic chat pair
(``responses_via_chat.py`` says why; ``chat_anthropic.py`` does the provider's side)."""

from __future__ import annotations

from .chat_anthropic import TRANSLATOR as CHAT_ANTHROPIC
from .responses_via_chat import ResponsesViaChat


class ResponsesAnthropic(ResponsesViaChat):
    __slots__ = ()

    wire_format = "anthropic"
    chat = CHAT_ANTHROPIC


TRANSLATOR = ResponsesAnthropic()
