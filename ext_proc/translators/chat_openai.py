"""OpenAI Chat Completions ⇄ the OpenAI wire format: OpenAI itself, xAI and OpenAI-compatible servers.

The request and response already have OpenAI's shape (``openai_api.py``), so the
translation is a rewrite of ``model`` (and ``stream_options`` so that usage is always
reported) and, on the way back, reading usage. Stream chunks pass through as the
provider's own bytes; only ``model``, the usage chunk and ``[DONE]`` are touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ..errors import upstream_status
from . import usage as provider_usage
from .base import ResponseContext, Target, UpstreamRequest, Usage
from .openai_api import MODEL_FIELD, OpenAIPassthrough
from .sse import SSEBuffer

# Events worth parsing: the end, usage, errors and final chunks; the rest pass as bytes.
_MARKERS = (
    b"[DONE]",
    b'"usage":{',
    b'"usage": {',
    b'"error"',
    b'"finish_reason":"',
    b'"finish_reason": "',
)


class ChatOpenAI(OpenAIPassthrough):
    """OpenAI, xAI and OpenAI-compatible servers (vLLM, Ollama, Together, Groq)."""

    __slots__ = ()

    endpoint = "chat_completions"
    path = "/chat/completions"

    def request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        if body.get("stream") is True:
            options = body.get("stream_options")
            body["stream_options"] = (
                {**options, "include_usage": True} if isinstance(options, dict) else {"include_usage": True}
            )
        return super().request(body, target)

    def stream(self, ctx: ResponseContext) -> OpenAIStream:
        return OpenAIStream(ctx)


TRANSLATOR = ChatOpenAI()


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
            found = MODEL_FIELD.search(data)
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


def _finishes(chunk: Mapping[str, Any]) -> bool:
    """Whether a chunk ends a choice (a non-null ``finish_reason``)."""
    choices = chunk.get("choices")
    return isinstance(choices, list) and any(
        isinstance(c, dict) and c.get("finish_reason") is not None for c in choices
    )
