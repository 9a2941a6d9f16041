"""Helpers shared by the simulator tests: keys, request helpers and wire-format assertions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from simulators.conformance import OpenAISpec, ProviderChecks
from simulators.testing import SimulatorProcess

KEYS = {"openai": "sk-sim-openai-0123", "anthropic": "sk-ant-sim-0123", "google": "AIza-sim-0123"}
AUTH = {
    "openai": {"authorization": f"Bearer {KEYS['openai']}"},
    "anthropic": {"x-api-key": KEYS["anthropic"], "anthropic-version": "2023-06-01"},
    "google": {"x-goog-api-key": KEYS["google"]},
}


@dataclass
class Checks:
    openai: OpenAISpec
    providers: ProviderChecks

    def openai_doc(self, doc: Any, schema: str) -> None:
        problems = self.openai.response_problems(schema, doc)
        assert not problems, f"not a valid {schema}: {problems[:5]}\n{orjson.dumps(doc)[:1500]!r}"

    def openai_sse(self, text: str) -> list[dict[str, Any]]:
        """Every chunk valid, `data: [DONE]` last; returns the chunks."""
        payloads = sse_data(text)
        assert payloads and payloads[-1] == "[DONE]", text[-300:]
        chunks = [orjson.loads(p) for p in payloads[:-1]]
        for chunk in chunks:
            self.openai_doc(chunk, "CreateChatCompletionStreamResponse")
        return chunks

    def provider(self, check: str, text: str | bytes) -> None:
        problems = self.providers.response(check, text)
        assert not problems, f"{check}: {problems[:5]}\n{text[:1500]!r}"


def sse_data(text: str) -> list[str]:
    """The `data:` payload of each SSE event (one line each in every format we simulate)."""
    return [
        line[len("data: ") :] for line in text.replace("\r\n", "\n").split("\n") if line.startswith("data: ")
    ]


def post(
    sim: SimulatorProcess,
    path: str,
    body: Any,
    headers: dict[str, str] | None = None,
    *,
    auth: bool = True,
    timeout: float = 10,
) -> httpx.Response:
    """POST `body` (JSON, or raw bytes) to `path` under the server root, by default with a valid key."""
    all_headers = {"content-type": "application/json", **(AUTH[sim.kind] if auth else {}), **(headers or {})}
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(sim.url + path, content=content, headers=all_headers, timeout=timeout)
