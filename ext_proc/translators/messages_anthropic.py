"""Anthropic Messages ⇄ Anthropic: passed through, ``model`` and the credential rewritten.

The client already speaks the provider's API, so the body goes on as it came but for
``model`` (the provider's own name). Headers: the gateway's key in ``x-api-key`` and
``anthropic-version: 2023-06-01`` (the Messages API's one version: what is newer comes as
betas); the client's ``anthropic-beta`` passes (``header_policy``), its credentials and
account headers (``anthropic-workspace-id``...) do not.

On the way back ``model`` becomes the slug that served, usage is read for credits
(``message_start``'s, superseded by ``message_delta``'s cumulative counts), and errors get
the gateway's code and wording (the provider's message only for the caller's own mistakes,
as ``chat_anthropic.py``'s table says), in Anthropic's shape. A stream passes as the
provider's own event bytes but ``message_start`` (its model) and ``message_stop``, held for
the exchange to add ``credits_used``; an ``error`` event ends it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from . import chat_anthropic, provider_errors
from . import message_documents as docs
from . import usage as provider_usage
from .base import ResponseContext, Target, TranslatedResponse, Translator, UpstreamRequest, Usage
from .sse import SSEBuffer, SSEEvent

# Events passed on as the provider's bytes without being read.
_PASSED = frozenset({"content_block_start", "content_block_delta", "content_block_stop", "ping"})


def upstream(path: str, body: dict[str, Any], target: Target) -> UpstreamRequest:
    """The request to one of Anthropic's Messages paths, with the provider's model and key."""
    body["model"] = target.upstream_model
    return UpstreamRequest(
        path=f"{target.base_path}{path}",
        headers={
            "x-api-key": target.api_key,
            "anthropic-version": chat_anthropic.ANTHROPIC_VERSION,
            "content-type": "application/json",
        },
        body=orjson.dumps(body),
    )


def error_response(status: int, body: bytes, request: Mapping[str, Any]) -> TranslatedResponse:
    """Anthropic's error, as the gateway answers it on Anthropic's paths."""
    return docs.error_response(chat_anthropic.error_response(status, body, request))


def answer(status: int, body: bytes, ctx: ResponseContext) -> dict[str, Any] | TranslatedResponse:
    """The provider's successful answer as an object; a TranslatedResponse when it is none or an error."""
    if status >= 400:
        return error_response(status, body, ctx.request)
    doc = provider_errors.json_or_none(body)
    if not isinstance(doc, dict):
        return docs.error_response(
            provider_errors.failed(502, "upstream_error", "the provider returned an unreadable response")
        )
    if doc.get("type") == "error":
        return error_response(502, body, ctx.request)
    return doc


class MessagesAnthropic(Translator):
    __slots__ = ()

    endpoint = "messages"
    wire_format = "anthropic"

    def request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        return upstream("/v1/messages", body, target)

    def response(self, status: int, body: bytes, ctx: ResponseContext) -> TranslatedResponse:
        doc = answer(status, body, ctx)
        if isinstance(doc, TranslatedResponse):
            return doc
        usage = provider_usage.anthropic(doc.get("usage"))
        if doc.get("model") != ctx.slug:
            doc["model"] = ctx.slug  # the slug that served: a client can send it back
            body = orjson.dumps(doc)
        return TranslatedResponse(status, body, usage)

    def stream(self, ctx: ResponseContext) -> MessagesStream:
        return MessagesStream(ctx)


TRANSLATOR = MessagesAnthropic()


class MessagesStream:
    """Anthropic's stream passed through (see the module's docstring)."""

    __slots__ = (
        "_raw_usage",
        "_request",
        "_slug",
        "_sse",
        "done",
        "error_code",
        "held",
        "response_id",
        "usage",
    )

    def __init__(self, ctx: ResponseContext) -> None:
        self._sse = SSEBuffer(ctx.max_event_bytes)
        self._slug = ctx.slug
        self._request = ctx.request
        self._raw_usage: dict[str, Any] = {}
        self.usage: Usage | None = None
        self.done = False
        self.error_code: str | None = None
        self.held: bytes | None = None
        self.response_id = ""

    @property
    def overflowed(self) -> bool:
        return self._sse.overflowed

    def feed(self, chunk: bytes) -> bytes:
        out: list[bytes] = []
        for event in self._sse.feed(chunk):
            self._on_event(event, out)
        return b"".join(out)

    def finish(self) -> bytes:
        out: list[bytes] = []
        for event in self._sse.flush():
            self._on_event(event, out)
        return b"".join(out)

    def _on_event(self, event: SSEEvent, out: list[bytes]) -> None:
        if self.done:
            return  # after message_stop or an error the client's stream is over
        if event.event in _PASSED:
            out.append(event.raw)
            return
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            self._error(502, "upstream_error", "the provider sent an unreadable stream event")
            return
        if not isinstance(data, dict):
            out.append(event.raw)
            return
        kind = data.get("type") or event.event
        if kind == "message_start":
            message = data.get("message")
            if isinstance(message, dict):
                self.response_id = str(message.get("id") or "")
                self._merge_usage(message.get("usage"))
                message["model"] = self._slug
            out.append(docs.event("message_start", data))
        elif kind == "message_delta":
            self._merge_usage(data.get("usage"))
            out.append(event.raw)
        elif kind == "message_stop":
            self.held = orjson.dumps(data)  # a JSON object the exchange completes (no stray spaces)
            self.done = True
        elif kind == "error":
            err = data.get("error")
            fallback = provider_errors.ClientError(502, "upstream_error", "the provider stream failed")
            e = chat_anthropic.error_fields(err if isinstance(err, dict) else {}, fallback, self._request)
            self._error(e.status, e.code, e.message)
        else:
            out.append(event.raw)  # events of newer API versions: the client's SDK decides

    def _merge_usage(self, raw: Any) -> None:
        if isinstance(raw, dict):
            self._raw_usage.update({k: v for k, v in raw.items() if v is not None})
            self.usage = provider_usage.anthropic(self._raw_usage)

    def _error(self, status: int, code: str, message: str) -> None:
        self.held = docs.error_body(status, code, message)
        self.error_code = code
        self.done = True
