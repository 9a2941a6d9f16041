"""The project's conformance checks: does a payload match what the real provider APIs send and accept?

Used by the simulators (to reject what the real APIs reject) and by the tests (to check what the
gateway sends and returns). Built on ``jsonschema``/``referencing`` over OpenAI's OpenAPI spec, and
on Anthropic's and Google's own SDK types; the material they read is vendored in ``data/`` (see
``data/PROVENANCE.md``) and loaded on first use, never at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simulators.conformance import anthropic, gemini
from simulators.conformance.openai_spec import OpenAISpec, Problem
from simulators.conformance.paths import DATA_DIR, FIXTURES_DIR
from simulators.conformance.sse import iter_sse

__all__ = [
    "DATA_DIR",
    "FIXTURES_DIR",
    "Kit",
    "OpenAISpec",
    "Problem",
    "ProviderChecks",
    "iter_sse",
    "load_kit",
]
OPENAI_REQUEST_SCHEMAS = (
    "CreateChatCompletionRequest",
    "CreateEmbeddingRequest",
    "CreateImageRequest",
    "CreateCompletionRequest",
    "CreateModerationRequest",
    "CreateSpeechRequest",
    "CreateTranscriptionRequest",
    "CreateTranslationRequest",
    "CreateResponse",
)


class ProviderChecks:
    """Anthropic's and Gemini's checks behind one object, named as the simulators use them."""

    def anthropic_request(self, body: Any, *, beta: bool = False) -> list[str]:
        return anthropic.request_problems(body, beta=beta)

    def gemini_request(self, body: Any, *, api: str = "v1beta") -> list[str]:
        return gemini.request_problems(body, api="v1" if api == "v1" else "v1beta")

    def gemini_message(self, message: str, body: Any) -> list[str]:
        """Parse ``body`` as the v1beta proto ``message`` (e.g. EmbedContentRequest)."""
        return gemini.message_problems(message, body)

    def response(self, check: str, text: str | bytes) -> list[str]:
        """check: anthropic-response | anthropic-sse | gemini-response | gemini-sse."""
        payload = text.decode() if isinstance(text, bytes) else text
        if check == "anthropic-sse":
            return anthropic.sse_problems(payload)
        if check == "gemini-sse":
            return gemini.sse_problems(payload)
        import json

        try:
            doc = json.loads(payload)
        except ValueError as e:
            return [f"not JSON: {e}"]
        if check == "anthropic-response":
            return anthropic.response_problems(doc)
        if check == "gemini-response":
            return gemini.response_problems(doc)
        raise ValueError(f"unknown check {check!r}")

    def warm_up(self, kind: str) -> None:
        """Import and compile what the checks need, so the first request is not the slow one."""
        if kind == "anthropic":
            self.anthropic_request(
                {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
            )
        elif kind == "google":
            self.gemini_request({"contents": [{"role": "user", "parts": [{"text": "x"}]}]})
            self.gemini_message("EmbedContentRequest", {})


@dataclass
class Kit:
    """The validators one simulator uses."""

    openai: OpenAISpec | None
    providers: ProviderChecks


def load_kit(kind: str) -> Kit:
    """The validators a simulator of ``kind`` needs, warmed up."""
    kit = Kit(OpenAISpec() if kind == "openai" else None, ProviderChecks())
    kit.providers.warm_up(kind)
    if kit.openai is not None:
        for schema in OPENAI_REQUEST_SCHEMAS:
            kit.openai.request_problems(schema, {"model": "m", "messages": [], "input": "x", "prompt": "x"})
    return kit
