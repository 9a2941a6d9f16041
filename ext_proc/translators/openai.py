"""The OpenAI wire format: OpenAI itself, xAI and OpenAI-compatible servers.

The request and response already have OpenAI's shape, so the translation is
a rewrite of ``model`` (and ``stream_options`` so that usage is always
reported) and, on the way back, reading usage. Stream chunks pass through as
the provider's own bytes; only the usage chunk and ``[DONE]`` are touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ext_proc.errors import upstream_status
from ext_proc.translators import usage as provider_usage
from ext_proc.translators.base import (
    Endpoint,
    ResponseContext,
    Target,
    TranslatedResponse,
    UpstreamRequest,
    Usage,
)
from ext_proc.translators.responses import failed, openai_error
from ext_proc.translators.sse import DEFAULT_MAX_EVENT_BYTES, SSEBuffer

_MARKERS = (b"[DONE]", b'"usage":{', b'"usage": {', b'"error"')

# Parameters a provider of this wire format rejects although OpenAI accepts
# them, and that change nothing the caller relies on when dropped.
_DROP_BY_KIND: dict[str, tuple[str, ...]] = {
    "xai": ("store", "service_tier", "prediction", "modalities", "audio"),
    "openai_compatible": ("store", "service_tier", "prediction", "metadata"),
}


def error_response(status: int, body: bytes) -> TranslatedResponse:
    """A provider error in OpenAI's shape: OpenAI's own codes and ``param`` kept, others re-coded."""
    try:
        err = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        err = None
    if isinstance(err, str):
        err = {"message": err}
    outcome = openai_error(status, err if isinstance(err, dict) else {})
    return failed(outcome.status, outcome.code, outcome.message, outcome.param)


class OpenAITranslator:
    """OpenAI, xAI and OpenAI-compatible servers (vLLM, Ollama, Together, Groq)."""

    def __init__(self, kind: str = "openai") -> None:
        self.kind = kind
        self._drop = _DROP_BY_KIND.get(kind, ())

    def media_urls(self, endpoint: Endpoint, body: Mapping[str, Any]) -> list[str]:
        return []  # these providers fetch image URLs themselves

    def request(self, endpoint: Endpoint, body: dict[str, Any], target: Target) -> UpstreamRequest:
        body["model"] = target.upstream_model
        for name in self._drop:
            body.pop(name, None)
        if endpoint is Endpoint.CHAT and body.get("stream") is True:
            options = body.get("stream_options")
            body["stream_options"] = (
                {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
            )
        return UpstreamRequest(
            path=target.base_path + endpoint.value,
            headers={"authorization": "Bearer " + target.api_key, "content-type": "application/json"},
            body=orjson.dumps(body),
        )

    def response(
        self, endpoint: Endpoint, status: int, body: bytes, ctx: ResponseContext
    ) -> TranslatedResponse:
        if status >= 400:
            return error_response(status, body)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return failed(502, "upstream_error", "upstream returned a body that is not JSON")
        if not isinstance(doc, dict):
            return failed(502, "upstream_error", "upstream returned a body that is not a JSON object")
        return TranslatedResponse(status, body, provider_usage.openai(doc))

    def stream(self, ctx: ResponseContext) -> OpenAIStream:
        return OpenAIStream(ctx.include_usage, ctx.max_event_bytes)


class OpenAIStream:
    """Pass-through of an OpenAI-format SSE stream that reads usage on the way.

    Chunks without any marker of interest go out as the very bytes received.
    """

    __slots__ = ("_include_usage", "_sse", "done", "error_code", "response_id", "usage")

    def __init__(self, include_usage: bool, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._include_usage = include_usage
        self._sse = SSEBuffer(max_event_bytes)
        self.usage: Usage | None = None
        self.done = False
        self.response_id = ""
        self.error_code: str | None = None

    def feed(self, chunk: bytes) -> bytes:
        if (
            self.response_id
            and self._sse.idle
            and chunk.endswith(b"\n\n")
            and b"\r" not in chunk
            and not any(m in chunk for m in _MARKERS)
        ):
            return chunk
        out: list[bytes] = []
        for event in self._sse.feed(chunk):
            keep = self._inspect(event.data)
            if keep:
                out.append(event.raw)
        return b"".join(out)

    def finish(self) -> bytes:
        return b"".join(e.raw for e in self._sse.flush() if self._inspect(e.data))

    @property
    def overflowed(self) -> bool:
        return self._sse.overflowed

    def _inspect(self, data: bytes) -> bool:
        """Record what the event tells; return whether it goes to the client."""
        if data == b"[DONE]":
            self.done = True
            return False
        if self.response_id and not any(m in data for m in _MARKERS[1:]):
            return True
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(obj, dict):
            return True
        if not self.response_id and isinstance(obj.get("id"), str):
            self.response_id = obj["id"]
        if isinstance(obj.get("error"), dict):
            _, self.error_code = upstream_status(500)
            code = obj["error"].get("code")
            if isinstance(code, str):
                self.error_code = code
            return True
        if isinstance(obj.get("usage"), dict):
            self.usage = provider_usage.openai(obj)
            if not obj.get("choices"):
                return self._include_usage
        return True
