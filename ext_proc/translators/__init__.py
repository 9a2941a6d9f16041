"""One translator per provider wire format, behind one interface (base.Translator)."""

from __future__ import annotations

from ext_proc.translators.base import Translator
from ext_proc.translators.openai import OpenAITranslator


def for_kind(kind: str) -> Translator:
    """The translator for a provider kind; raises KeyError for an unknown kind."""
    return _BY_KIND[kind]


def _build() -> dict[str, Translator]:
    registry: dict[str, Translator] = {
        "openai": OpenAITranslator("openai"),
        "xai": OpenAITranslator("xai"),
        "openai_compatible": OpenAITranslator("openai_compatible"),
    }
    try:  # written in parallel; registered once present
        from ext_proc.translators.anthropic import AnthropicTranslator

        registry["anthropic"] = AnthropicTranslator()
    except ImportError:
        pass
    try:
        from ext_proc.translators.gemini import GeminiTranslator

        registry["google"] = GeminiTranslator()
    except ImportError:
        pass
    return registry


_BY_KIND = _build()
