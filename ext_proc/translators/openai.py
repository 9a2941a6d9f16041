"""The OpenAI wire format: OpenAI itself, xAI and OpenAI-compatible servers.

The request and response already have OpenAI's shape, so the translation is
a rewrite of ``model`` (and ``stream_options`` so that usage is always
reported) and, on the way back, reading usage. Stream chunks pass through as
the provider's own bytes; only the usage chunk and ``[DONE]`` are touched.
"""

from __future__ import annotations

import re
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
from ext_proc.translators.provider_errors import failed, openai_error
from ext_proc.translators.sse import SSEBuffer

# Events worth parsing: the end, usage, errors and final chunks; the rest pass as bytes.
_MARKERS = (
    b"[DONE]",
    b'"usage":{',
    b'"usage": {',
    b'"error"',
    b'"finish_reason":"',
    b'"finish_reason": "',
)

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
        if isinstance(doc.get("model"), str) and doc["model"] != ctx.slug:
            # The slug that served, not the provider's name: a client can send it back.
            served = b'"model":' + orjson.dumps(ctx.slug)
            body = _MODEL_FIELD.sub(lambda _: served, body, count=1)
        return TranslatedResponse(status, body, provider_usage.openai(doc))

    def stream(self, ctx: ResponseContext) -> OpenAIStream:
        return OpenAIStream(ctx)


class OpenAIStream:
    """Pass-through of an OpenAI-format SSE stream that reads usage on the way.

    Chunks without any marker of interest go out as the very bytes received, but for
    ``model``: the provider's name (``gpt-4o-mini-2024-07-18``) becomes the slug that served,
    learned from the first chunk and replaced as bytes. The last chunk -- the final
    ``finish_reason`` chunk without ``include_usage``, the usage chunk with it, or an error --
    is held in :attr:`held` for the exchange to complete with ``credits_used``.
    """

    __slots__ = (
        "_include_usage",
        "_model",
        "_slug",
        "_sse",
        "done",
        "error_code",
        "held",
        "response_id",
        "usage",
    )

    def __init__(self, ctx: ResponseContext) -> None:
        self._include_usage = ctx.include_usage
        self._sse = SSEBuffer(ctx.max_event_bytes)
        self._slug = b'"model":' + orjson.dumps(ctx.slug)
        self._model: bytes | None = None  # the provider's ``"model":"..."`` bytes, once learned
        self.usage: Usage | None = None
        self.done = False
        self.response_id = ""
        self.error_code: str | None = None
        self.held: bytes | None = None

    def feed(self, chunk: bytes) -> bytes:
        if (
            self.response_id
            and self._sse.idle
            and chunk.endswith(b"\n\n")
            and b"\r" not in chunk
            and not any(m in chunk for m in _MARKERS)
        ):
            return self._renamed(chunk)
        out: list[bytes] = []
        for event in self._sse.feed(chunk):
            self._on_event(event.data, event.raw, out)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        for event in self._sse.flush():
            self._on_event(event.data, event.raw, out)
        return b"".join(out)

    @property
    def overflowed(self) -> bool:
        return self._sse.overflowed

    def _renamed(self, data: bytes) -> bytes:
        model = self._model
        return data.replace(model, self._slug) if model is not None and model != self._slug else data

    def _hold(self, out: list[bytes], data: bytes) -> None:
        if self.held is not None:
            out.append(b"data: " + self.held + b"\n\n")
        self.held = data.strip()

    def _on_event(self, data: bytes, raw: bytes, out: list[bytes]) -> None:
        """Record what the event tells; pass it on, hold it as the last chunk, or drop it."""
        if data == b"[DONE]":
            self.done = True
            return
        if self.response_id and not any(m in data for m in _MARKERS[1:]):
            out.append(self._renamed(raw))
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            out.append(raw)
            return
        if not isinstance(obj, dict):
            out.append(raw)
            return
        if not self.response_id and isinstance(obj.get("id"), str):
            self.response_id = obj["id"]
            found = _MODEL_FIELD.search(data)
            self._model = found.group(0) if found else None
        if isinstance(obj.get("error"), dict):
            _, self.error_code = upstream_status(500)
            code = obj["error"].get("code")
            if isinstance(code, str):
                self.error_code = code
            self._hold(out, data)
            return
        if isinstance(obj.get("usage"), dict):
            self.usage = provider_usage.openai(obj)
            if not obj.get("choices"):
                if self._include_usage:
                    self._hold(out, self._renamed(data))
                return
        if not self._include_usage and _finishes(obj):
            self._hold(out, self._renamed(data))
            return
        out.append(self._renamed(raw))


_MODEL_FIELD = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


def _finishes(chunk: Mapping[str, Any]) -> bool:
    """Whether a chunk ends a choice (a non-null ``finish_reason``)."""
    choices = chunk.get("choices")
    return isinstance(choices, list) and any(
        isinstance(c, dict) and c.get("finish_reason") is not None for c in choices
    )
