"""Anthropic Messages ⇄ the Gemini API, through chat.

The Messages request becomes a chat request (``messages_chat.py``), which ``chat_gemini.py``
turns into ``generateContent`` as it does any chat request (images given by URL are fetched
by the gateway, tool results find their function's name from the earlier call); Gemini's
answer or stream comes back as Anthropic's ``Message`` or stream events.

``thinking`` (enabled, ``budget_tokens``) on a Gemini 2.5 model becomes Gemini's own
``thinkingConfig``: ``thinkingBudget`` the budget as given (Gemini's range: 0-24576 on Flash,
128-32768 on Pro, clamped into it), and ``includeThoughts: true``, so that the thought summary
Gemini returns comes back as Anthropic ``thinking`` blocks (chat_gemini.py reads thought parts
as ``reasoning_content``; messages_chat.py makes them the blocks). Their ``signature`` is empty:
only Anthropic can sign thinking, and a signature is only read by Anthropic, to which these
blocks never go back (messages_chat.py drops thinking given back). On other Gemini models
``thinking`` is the ``reasoning_effort`` chat_gemini.py maps (nothing, before 2.5).
"""

from __future__ import annotations

from typing import Any

import orjson

from . import chat_gemini
from .base import Target, UpstreamRequest
from .messages_chat import ViaChat

# Gemini 2.5's thinking budgets (Flash may turn thinking off with 0; Pro thinks at least 128).
_BUDGET_RANGE = {"flash": (0, 24576), "pro": (128, 32768)}


class MessagesGemini(ViaChat):
    __slots__ = ()

    wire_format = "gemini"
    chat = chat_gemini.TRANSLATOR

    def request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        upstream = super().request(body, target)
        budget = thinking_budget(body, target.upstream_model)
        if budget is None:
            return upstream
        doc = orjson.loads(upstream.body)
        config = doc.setdefault("generationConfig", {})
        config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": True}
        return UpstreamRequest(upstream.path, upstream.headers, orjson.dumps(doc))


def thinking_budget(body: dict[str, Any], model: str) -> int | None:
    """Gemini's ``thinkingBudget`` for a Messages request's ``thinking`` on a 2.5 model; None when
    it asks for no thinking or the model has no budget to set."""
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or not model.startswith("gemini-2.5"):
        return None
    low, high = _BUDGET_RANGE["pro" if "pro" in model else "flash"]
    return min(max(budget, low), high)


TRANSLATOR = MessagesGemini()
