"""One translator per provider wire format, behind one interface (base.Translator)."""

from __future__ import annotations

from ext_proc.translators.anthropic import AnthropicTranslator
from ext_proc.translators.base import Translator
from ext_proc.translators.gemini import GeminiTranslator
from ext_proc.translators.openai import OpenAITranslator

_BY_KIND: dict[str, Translator] = {
    "openai": OpenAITranslator("openai"),
    "xai": OpenAITranslator("xai"),
    "openai_compatible": OpenAITranslator("openai_compatible"),
    "anthropic": AnthropicTranslator(),
    "google": GeminiTranslator(),
}


def for_kind(kind: str) -> Translator:
    """The translator for a provider kind; raises KeyError for an unknown kind."""
    return _BY_KIND[kind]
