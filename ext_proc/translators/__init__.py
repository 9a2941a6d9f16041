"""One translator per (endpoint, provider wire format) pair, behind one interface (base.Translator).

Each pair is a module named ``<endpoint>_<wire format>.py``, as Envoy AI Gateway's
``internal/translator/<from>_<to>`` files: ``chat_anthropic.py`` turns an OpenAI chat
completion request into Anthropic's Messages API and its answer back. Adding a pair is
adding its module and one line below; adding a provider of a known wire format is one
line of :data:`WIRE_FORMATS`. A pair may serve only some kinds of its wire format
(``Translator.kinds``: the Responses API passes through to OpenAI, and goes through chat
completions for xAI and OpenAI-compatible servers), so a request's translator is found
by the provider's kind. A pair that does not exist (embeddings on Anthropic, image
generation on Gemini) is the client's ``400 unsupported_endpoint``.

What does not depend on the pair is shared: ``messages``, ``params``, ``chunks``, ``sse``,
``usage``, ``chat_documents``, ``message_documents``, ``provider_errors``, and each wire
format's own ``openai_api``/``gemini_api``. Anthropic's Messages API on a provider that does
not speak it composes that provider's chat pair with ``messages_chat`` (the direction
``chat_anthropic`` lacks), rather than a second translator per provider; so does the
Responses API with ``responses_via_chat``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ext_proc.errors import GatewayError
from ext_proc.translators import (
    audio_speech_openai,
    chat_anthropic,
    chat_gemini,
    chat_openai,
    completions_openai,
    count_tokens_anthropic,
    embeddings_gemini,
    embeddings_openai,
    images_openai,
    messages_anthropic,
    messages_gemini,
    messages_openai,
    moderations_openai,
    responses_anthropic,
    responses_gemini,
    responses_openai,
    transcriptions_gemini,
    transcriptions_openai,
)
from ext_proc.translators.base import Translator

if TYPE_CHECKING:
    from ext_proc.endpoints.base import Endpoint

# Provider kind (the control plane's Provider.kind) -> the wire format its API speaks.
WIRE_FORMATS: dict[str, str] = {
    "openai": "openai",
    "xai": "openai",
    "openai_compatible": "openai",
    "anthropic": "anthropic",
    "google": "gemini",
}

PAIRS: tuple[Translator, ...] = (
    chat_openai.TRANSLATOR,
    chat_anthropic.TRANSLATOR,
    chat_gemini.TRANSLATOR,
    embeddings_openai.TRANSLATOR,
    embeddings_gemini.TRANSLATOR,
    images_openai.TRANSLATOR,
    messages_openai.TRANSLATOR,
    messages_anthropic.TRANSLATOR,
    messages_gemini.TRANSLATOR,
    count_tokens_anthropic.TRANSLATOR,
    completions_openai.TRANSLATOR,
    moderations_openai.TRANSLATOR,
    audio_speech_openai.TRANSLATOR,
    transcriptions_openai.TRANSLATOR,
    transcriptions_openai.TRANSLATIONS,
    transcriptions_gemini.TRANSLATOR,
    transcriptions_gemini.TRANSLATIONS,
    responses_openai.TRANSLATOR,
    responses_openai.VIA_CHAT,
    responses_anthropic.TRANSLATOR,
    responses_gemini.TRANSLATOR,
)


def _by_kind(pairs: tuple[Translator, ...]) -> dict[str, dict[str, Translator]]:
    """provider kind -> endpoint name -> its translator; two pairs for one slot is a bug."""
    table: dict[str, dict[str, Translator]] = {kind: {} for kind in WIRE_FORMATS}
    for pair in pairs:
        for kind, wire in WIRE_FORMATS.items():
            if wire == pair.wire_format and (pair.kinds is None or kind in pair.kinds):
                if pair.endpoint in table[kind]:
                    raise ValueError(f"two translators of {pair.endpoint} for {kind}")
                table[kind][pair.endpoint] = pair
    return table


# provider kind -> endpoint name -> translator: two dict lookups per request, nothing allocated.
_BY_KIND = _by_kind(PAIRS)
# wire format -> the endpoints its providers serve (every kind of it, through one pair or another)
_SERVED_BY_WIRE_FORMAT: dict[str, frozenset[str]] = {
    wire: frozenset(p.endpoint for p in PAIRS if p.wire_format == wire) for wire in WIRE_FORMATS.values()
}


# Endpoints a kind lacks although its wire format has their pair: xAI's API has no audio
# endpoints (its pairs refuse it themselves, audio_speech_openai.refuse_kind).
KIND_LACKS: dict[str, frozenset[str]] = {
    kind: frozenset({"audio_speech", "audio_transcriptions", "audio_translations"})
    for kind in audio_speech_openai.NO_AUDIO_KINDS
}


def has_pair(endpoint: str, wire_format: str, kind: str = "") -> bool:
    """Whether a provider speaking ``wire_format`` (of ``kind``, when given) serves the endpoint
    named ``endpoint``."""
    if endpoint in KIND_LACKS.get(kind, ()):
        return False
    return endpoint in _SERVED_BY_WIRE_FORMAT.get(wire_format, frozenset())


def translator_for(endpoint: Endpoint, kind: str) -> Translator:
    """The translator of ``endpoint`` for a provider of ``kind`` (``Provider.kind``: openai,
    xai, openai_compatible, anthropic, google).

    Raises the client's 400 ``unsupported_endpoint`` when the provider has no such API.
    """
    translator = _BY_KIND[kind].get(endpoint.name)
    if translator is None:
        raise GatewayError(
            400,
            "unsupported_endpoint",
            f"This model's provider does not support {endpoint.path}.",
            param="model",
        )
    return translator
