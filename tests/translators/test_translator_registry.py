"""Every provider kind and served endpoint has its translator, or answers 400 unsupported_endpoint."""

from __future__ import annotations

import pytest

from ext_proc import endpoints, translators
from ext_proc.errors import GatewayError
from ext_proc.translators import WIRE_FORMATS, translator_for
from ext_proc.translators.audio_speech_openai import AudioSpeechOpenAI
from ext_proc.translators.chat_anthropic import ChatAnthropic
from ext_proc.translators.chat_gemini import ChatGemini
from ext_proc.translators.chat_openai import ChatOpenAI
from ext_proc.translators.completions_openai import CompletionsOpenAI
from ext_proc.translators.count_tokens_anthropic import CountTokensAnthropic
from ext_proc.translators.embeddings_gemini import EmbeddingsGemini
from ext_proc.translators.embeddings_openai import EmbeddingsOpenAI
from ext_proc.translators.images_openai import ImagesOpenAI
from ext_proc.translators.messages_anthropic import MessagesAnthropic
from ext_proc.translators.messages_gemini import MessagesGemini
from ext_proc.translators.messages_openai import MessagesOpenAI
from ext_proc.translators.moderations_openai import ModerationsOpenAI
from ext_proc.translators.responses_anthropic import ResponsesAnthropic
from ext_proc.translators.responses_gemini import ResponsesGemini
from ext_proc.translators.responses_openai import ResponsesOpenAI, ResponsesOpenAIChat
from ext_proc.translators.transcriptions_gemini import TranscriptionsGemini, TranslationsGemini
from ext_proc.translators.transcriptions_openai import TranscriptionsOpenAI, TranslationsOpenAI

# xAI takes the OpenAI pairs; the audio ones refuse it themselves (its API has no audio endpoints,
# tests/translators/test_transcriptions_openai.py::test_xai_has_no_audio_api).
OPENAI = {
    "chat_completions": ChatOpenAI,
    "embeddings": EmbeddingsOpenAI,
    "images": ImagesOpenAI,
    "messages": MessagesOpenAI,
    "moderations": ModerationsOpenAI,
    "completions": CompletionsOpenAI,
    "audio_speech": AudioSpeechOpenAI,
    "audio_transcriptions": TranscriptionsOpenAI,
    "audio_translations": TranslationsOpenAI,
}
# provider kind -> endpoint name -> its translator's class; absent: unsupported_endpoint
SERVES: dict[str, dict[str, type]] = {
    "openai": {**OPENAI, "responses": ResponsesOpenAI},
    # The Responses API through chat completions: not every such server has it.
    "xai": {**OPENAI, "responses": ResponsesOpenAIChat},
    "openai_compatible": {**OPENAI, "responses": ResponsesOpenAIChat},
    "anthropic": {
        "chat_completions": ChatAnthropic,
        "messages": MessagesAnthropic,
        "count_tokens": CountTokensAnthropic,
        "responses": ResponsesAnthropic,
    },
    "google": {
        "chat_completions": ChatGemini,
        "embeddings": EmbeddingsGemini,
        "messages": MessagesGemini,
        "audio_transcriptions": TranscriptionsGemini,
        "audio_translations": TranslationsGemini,
        "responses": ResponsesGemini,
    },
}
# Endpoints the gateway answers itself for some wire formats (no provider call, no pair).
LOCAL = {("openai", "count_tokens"), ("gemini", "count_tokens")}
PAIRS = [(kind, e) for kind in SERVES for e in endpoints.SERVED.endpoints]


def test_every_provider_kind_is_known() -> None:
    assert set(WIRE_FORMATS) == set(SERVES)


@pytest.mark.parametrize(("kind", "endpoint"), PAIRS, ids=[f"{k}-{e.name}" for k, e in PAIRS])
def test_each_kind_and_endpoint(kind: str, endpoint: endpoints.Endpoint) -> None:
    expected = SERVES[kind].get(endpoint.name)
    if expected is not None:
        translator = translator_for(endpoint, kind)
        assert type(translator) is expected
        assert (translator.endpoint, translator.wire_format) == (endpoint.name, WIRE_FORMATS[kind])
        assert translator is translator_for(endpoint, kind)  # one instance for every request
        return
    with pytest.raises(GatewayError) as info:
        translator_for(endpoint, kind)
    err = info.value
    assert (err.status, err.code, err.param) == (400, "unsupported_endpoint", "model")
    assert err.message == f"This model's provider does not support {endpoint.path}."


@pytest.mark.parametrize(("kind", "endpoint"), PAIRS, ids=[f"{k}-{e.name}" for k, e in PAIRS])
def test_a_local_answer_stands_only_where_no_pair_does(kind: str, endpoint: endpoints.Endpoint) -> None:
    wire = WIRE_FORMATS[kind]
    local = wire in endpoint.local_for
    assert local == ((wire, endpoint.name) in LOCAL)
    assert not (local and translators.has_pair(endpoint.name, wire))


def test_every_pair_serves_a_served_endpoint_once() -> None:
    """Once per provider kind: two pairs of one endpoint and wire format serve different kinds."""
    names = {e.name for e in endpoints.SERVED.endpoints}
    served = [
        (t.endpoint, kind)
        for t in translators.PAIRS
        for kind, wire in WIRE_FORMATS.items()
        if wire == t.wire_format and (t.kinds is None or kind in t.kinds)
    ]
    assert len(served) == len(set(served))
    pairs = [(t.endpoint, t.wire_format) for t in translators.PAIRS]
    assert {endpoint for endpoint, _ in pairs} <= names
    assert {wire for _, wire in pairs} == set(WIRE_FORMATS.values())


def test_only_streaming_endpoints_have_streams() -> None:
    by_name = {e.name: e for e in endpoints.SERVED.endpoints}
    for translator in translators.PAIRS:
        if not by_name[translator.endpoint].streams:
            with pytest.raises(TypeError):
                translator.stream(None)  # type: ignore[arg-type]
