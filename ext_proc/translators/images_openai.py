"""OpenAI Image generations ⇄ the OpenAI wire format: passed through, ``model`` rewritten both ways.

Images are priced per image: the count is the answer's ``data``, whether or not the
provider also reports token usage (``gpt-image-1`` does, DALL·E does not).
"""

from __future__ import annotations

from typing import Any

from . import usage as provider_usage
from .base import Usage
from .openai_api import OpenAIPassthrough


class ImagesOpenAI(OpenAIPassthrough):
    __slots__ = ()

    endpoint = "images"
    path = "/images/generations"

    def usage(self, doc: dict[str, Any]) -> Usage | None:
        data = doc.get("data")
        return provider_usage.openai(doc, images=len(data) if isinstance(data, list) else 0)


TRANSLATOR = ImagesOpenAI()
