"""The conformance checks as test assertions, over the project's own validators
(`simulators.conformance`, the same code the simulators validate with). Nothing is loaded until a
test first asks."""

from __future__ import annotations

import functools
import json
from typing import Any

from simulators.conformance import FIXTURES_DIR, OpenAISpec, ProviderChecks, iter_sse

__all__ = ["FIXTURES_DIR", "assert_openai", "assert_openai_sse", "openai_errors", "providers"]


@functools.cache
def _spec() -> OpenAISpec:
    return OpenAISpec()


@functools.cache
def providers() -> ProviderChecks:
    return ProviderChecks()


def openai_errors(doc: Any, schema: str) -> list[str]:
    """Every way ``doc`` breaks the OpenAI spec's ``schema`` (lenient mode, as real responses are)."""
    return _spec().response_problems(schema, doc)


def assert_openai(doc: Any, schema: str) -> None:
    errors = openai_errors(doc, schema)
    assert not errors, f"not a valid {schema}:\n" + "\n".join(errors[:10]) + "\n" + json.dumps(doc)[:2000]


def assert_openai_sse(text: str) -> list[dict[str, Any]]:
    """Validate every chunk of an SSE transcript; returns the parsed chunks ([DONE] excluded)."""
    chunks = []
    payloads = [data for _, data in iter_sse(text)]
    assert payloads and payloads[-1] == "[DONE]", f"stream does not end with [DONE]: {text[-500:]!r}"
    for data in payloads[:-1]:
        chunk = json.loads(data)
        assert_openai(chunk, "CreateChatCompletionStreamResponse")
        chunks.append(chunk)
    return chunks
