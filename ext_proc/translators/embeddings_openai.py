"""OpenAI Embeddings ⇄ the OpenAI wire format: passed through, ``model`` rewritten both ways.

Usage is the answer's ``usage.prompt_tokens``; embeddings have no output tokens.
"""

from __future__ import annotations

from .openai_api import OpenAIPassthrough


class EmbeddingsOpenAI(OpenAIPassthrough):
    __slots__ = ()

    endpoint = "embeddings"
    path = "/embeddings"


TRANSLATOR = EmbeddingsOpenAI()
