"""Anthropic Messages ⇄ the Gemini API, through chat.

The Messages request becomes a chat request (``messages_chat.py``), which ``chat_gemini.py``
turns into ``generateContent`` as it does any chat request (images given by URL are fetched
by the gateway, tool results find their function's name from the earlier call); Gemini's
answer or stream comes back as Anthropic's ``Message`` or stream events. ``thinking`` becomes
``reasoning_effort``, which ``chat_gemini.py`` makes a thinking budget on Gemini 2.5.
"""

from __future__ import annotations

from . import chat_gemini
from .messages_chat import ViaChat


class MessagesGemini(ViaChat):
    __slots__ = ()

    wire_format = "gemini"
    chat = chat_gemini.TRANSLATOR


TRANSLATOR = MessagesGemini()
