"""What a simulator will report as usage for a request body, without sending it."""

from __future__ import annotations

from typing import Any

from simulators import anthropic_api, google_api, openai_api


def expected_usage(kind: str, body: dict[str, Any], path: str | None = None) -> dict[str, Any]:
    """The usage object in the provider's own field names (OpenAI `usage`, Anthropic `usage`,
    Gemini `usageMetadata`), before any scripted override.

    `path` picks the endpoint where a kind has several: OpenAI ``/v1/embeddings`` or
    ``/v1/completions`` (legacy) or ``/v1/responses`` (default chat),
    Gemini ``...:countTokens`` (default generateContent).
    """
    if kind == "openai":
        return openai_api.usage_for(path or "/v1/chat/completions", body)
    if kind == "anthropic":
        return anthropic_api.usage_for(body)
    if kind == "google":
        return google_api.usage_for(path or ":generateContent", body)
    raise ValueError(f"unknown kind {kind!r}")
