"""OpenAI Moderations ⇄ the OpenAI wire format: passed through, ``model`` rewritten both ways.

A moderation answer reports no usage: it is charged from the gateway's estimate of its
input (``endpoints/moderations.py``), and its usage record says ``usage_estimated``. Only
OpenAI-format providers have it.
"""

from __future__ import annotations

from typing import Any

from .base import Usage
from .openai_api import OpenAIPassthrough


class ModerationsOpenAI(OpenAIPassthrough):
    __slots__ = ()

    endpoint = "moderations"
    path = "/moderations"

    def usage(self, doc: dict[str, Any]) -> Usage | None:
        return None  # OpenAI reports none: the exchange charges the estimate


TRANSLATOR = ModerationsOpenAI()
