"""The Responses API ⇄ the OpenAI wire format.

OpenAI itself serves ``POST /v1/responses``: the request passes through with ``model``
rewritten (``openai_api.py``), the answer with ``model`` rewritten to the slug that served
and its usage read; a stream's events leave as the provider's own bytes but for ``model``
(in the ``response`` objects of ``response.created`` and the like), and its last event
(``response.completed``, ``.incomplete``, ``.failed`` or ``error``) is held for the
gateway's charge. xAI and OpenAI-compatible servers are not relied on for the Responses
API (many serve chat completions only): they get it through their chat pair
(:class:`ResponsesOpenAIChat`, ``responses_via_chat.py``).
"""

from __future__ import annotations

from typing import Any

import orjson

from . import responses_events as events
from . import usage as provider_usage
from .base import ResponseContext, Target, UpstreamRequest, Usage
from .chat_openai import TRANSLATOR as CHAT_OPENAI
from .openai_api import OpenAIPassthrough
from .responses_via_chat import ResponsesViaChat
from .sse import SSEBuffer

# Events worth parsing: those holding a ``response`` object (its model is renamed, the last
# one's usage read) and errors; the deltas between them pass as bytes.
_MARKERS = (b'"response":{', b'"response": {', b'"type":"error"', b'"type": "error"')


class ResponsesOpenAI(OpenAIPassthrough):
    """OpenAI's own Responses API."""

    __slots__ = ()

    endpoint = "responses"
    kinds = frozenset({"openai"})
    path = "/responses"

    def request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        # The gateway put the conversation it names in ``input`` (ext_proc/conversations.py):
        # OpenAI's own copy of it is never used, nor an id the workspace may not have.
        body.pop("previous_response_id", None)
        return super().request(body, target)

    def stream(self, ctx: ResponseContext) -> ResponsesPassthrough:
        return ResponsesPassthrough(ctx)


class ResponsesOpenAIChat(ResponsesViaChat):
    """xAI and OpenAI-compatible servers: the Responses API through their chat completions."""

    __slots__ = ()

    wire_format = "openai"
    kinds = frozenset({"xai", "openai_compatible"})
    chat = CHAT_OPENAI


TRANSLATOR = ResponsesOpenAI()
VIA_CHAT = ResponsesOpenAIChat()


class ResponsesPassthrough:
    """OpenAI's Responses event stream, passed through.

    Events without a ``response`` object go out as the very bytes received. The provider's
    model name (``gpt-4o-mini-2024-07-18``) becomes the slug that served, learned from the
    first ``response`` object and replaced as bytes. The last event is held in :attr:`held`
    (its JSON) for the gateway to add ``credits_used`` to its ``response``; its usage is
    :attr:`usage`. OpenAI numbers its events from 0 without gaps: an error event the gateway
    writes (:meth:`error_event`) is numbered after the ones passed.
    """

    __slots__ = ("_events", "_model", "_slug", "_sse", "done", "error_code", "held", "response_id", "usage")

    def __init__(self, ctx: ResponseContext) -> None:
        self._sse = SSEBuffer(ctx.max_event_bytes)
        self._slug = b'"model":' + orjson.dumps(ctx.slug)
        self._model: bytes | None = None  # the provider's ``"model":"..."`` bytes, once learned
        self._events = 0
        self.usage: Usage | None = None
        self.done = False
        self.response_id = ""
        self.error_code: str | None = None
        self.held: bytes | None = None

    @property
    def overflowed(self) -> bool:
        return self._sse.overflowed

    def feed(self, chunk: bytes) -> bytes:
        if (
            self._model is not None
            and not self.done
            and self._sse.idle
            and chunk.endswith(b"\n\n")
            and b"\r" not in chunk
            and not any(m in chunk for m in _MARKERS)
        ):
            self._events += chunk.count(b"\n\n")
            return chunk
        out: list[bytes] = []
        for event in self._sse.feed(chunk):
            self._on_event(event.event, event.data, event.raw, out)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        for event in self._sse.flush():
            self._on_event(event.event, event.data, event.raw, out)
        return b"".join(out)

    def error_event(self, status: int, code: str, message: str, param: str | None = None) -> bytes:
        self._events += 1
        return events.error_event(self._events - 1, status, code, message, param)

    def _renamed(self, data: bytes) -> bytes:
        model = self._model
        return data.replace(model, self._slug) if model is not None and model != self._slug else data

    def _on_event(self, name: str | None, data: bytes, raw: bytes, out: list[bytes]) -> None:
        if self.done:
            return  # nothing after the last event
        self._events += 1
        if self._model is not None and not any(m in data for m in _MARKERS):
            out.append(raw)
            return
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            out.append(raw)
            return
        if not isinstance(doc, dict):
            out.append(raw)
            return
        kind = doc.get("type") or name
        response = doc.get("response")
        if isinstance(response, dict):
            self._learn(response)
        if kind not in events.TERMINAL:
            out.append(self._renamed(raw))
            return
        if isinstance(response, dict):
            self.usage = provider_usage.openai(response)
        if kind == "error":
            self.error_code = _code(doc)
        elif kind == "response.failed":
            err = response.get("error") if isinstance(response, dict) else None
            self.error_code = _code({"error": err}) if isinstance(err, dict) else "upstream_error"
        self.held = self._renamed(data.strip())
        self.done = True

    def _learn(self, response: dict[str, Any]) -> None:
        if not self.response_id and isinstance(response.get("id"), str):
            self.response_id = response["id"]
        if self._model is None and isinstance(response.get("model"), str):
            self._model = b'"model":' + orjson.dumps(response["model"])


def _code(doc: dict[str, Any]) -> str:
    """The code of an OpenAI stream error (top-level, or in a nested ``error``)."""
    nested = doc.get("error")
    for source in (nested if isinstance(nested, dict) else {}, doc):
        code = source.get("code")
        if isinstance(code, str) and code:
            return code
    return "upstream_error"
