"""OpenAI text to speech ⇄ the OpenAI wire format: the JSON request passed through with ``model``
rewritten; the audio answer is the provider's own bytes, which never come back through here.

A successful answer passes to the client untouched, as the provider streams it
(``Endpoint.passes_answer``); only an error answer is read, into OpenAI's envelope. xAI's API
has no speech endpoint: ``400 unsupported_endpoint``.
"""

from __future__ import annotations

from typing import Any

from ..errors import GatewayError
from .base import ResponseContext, Target, TranslatedResponse, UpstreamRequest, Usage
from .openai_api import OpenAIPassthrough, error_response

# OpenAI-format kinds whose API has no audio endpoints.
NO_AUDIO_KINDS = frozenset({"xai"})


def refuse_kind(target: Target, path: str) -> None:
    """An OpenAI-format provider without OpenAI's audio API (xAI): the client's 400."""
    if target.kind in NO_AUDIO_KINDS:
        raise GatewayError(
            400, "unsupported_endpoint", f"This model's provider does not support {path}.", param="model"
        )


class AudioSpeechOpenAI(OpenAIPassthrough):
    __slots__ = ()

    endpoint = "audio_speech"
    path = "/audio/speech"

    def request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        refuse_kind(target, "/v1/audio/speech")
        return super().request(body, target)

    def response(self, status: int, body: bytes, ctx: ResponseContext) -> TranslatedResponse:
        if status >= 400:
            return error_response(status, body)
        return TranslatedResponse(status, body, None)

    def usage(self, doc: dict[str, Any]) -> Usage | None:
        return None  # charged from the request's characters (endpoints/audio_speech.py)


TRANSLATOR = AudioSpeechOpenAI()
