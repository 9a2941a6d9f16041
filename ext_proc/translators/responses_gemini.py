"""The Responses API ⇄ Gemini's generateContent, through the Gemini chat pair
(``responses_via_chat.py`` says why; ``chat_gemini.py`` does the provider's side)."""

from __future__ import annotations

from .chat_gemini import TRANSLATOR as CHAT_GEMINI
from .responses_via_chat import ResponsesViaChat


class ResponsesGemini(ResponsesViaChat):
    __slots__ = ()

    wire_format = "gemini"
    chat = CHAT_GEMINI


TRANSLATOR = ResponsesGemini()
