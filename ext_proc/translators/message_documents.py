"""Anthropic Messages API documents the gateway writes: events, usage, ids and errors.

Every pair of the ``messages`` endpoint answers in Anthropic's shapes, whoever served:
the pass-through of an Anthropic provider (``messages_anthropic.py``) and the translation
of a chat answer (``messages_chat.py``). What they write the same way lives here once, as
``chat_documents.py`` does for OpenAI's chat completions.

Errors: the translators below an endpoint write OpenAI's envelope (``provider_errors``), the
one error vocabulary of the gateway; :func:`error_response` restates it in Anthropic's shape
(``infery_proto.wire.anthropic_error_object``: Anthropic's type for the status, the gateway's
stable code, the same message).
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
from infery_proto.wire import ERRORS, anthropic_error_object

from .base import TranslatedResponse, Usage


def event(name: str, data: dict[str, Any]) -> bytes:
    """One SSE event as Anthropic writes it: ``event:`` names the data's ``type`` (the SDK reads the name)."""
    return event_bytes(name, orjson.dumps(data))


def event_bytes(name: str, data: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"


def message_id(provider_id: Any) -> str:
    """``msg_`` and the provider's id (a chat id loses its ``chatcmpl-``); random without one."""
    text = str(provider_id or "")
    return "msg_" + (text.removeprefix("chatcmpl-") or secrets.token_hex(12))


def usage_doc(usage: Usage | None) -> dict[str, Any]:
    """Anthropic's usage object: ``input_tokens`` excludes the tokens read from the cache."""
    usage = usage or Usage()
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    return {
        "input_tokens": usage.input_tokens - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": usage.output_tokens,
    }


def error_body(status: int, code: str, message: str) -> bytes:
    return orjson.dumps(anthropic_error_object(status, code, message))


def status_of(code: str, default: int = 502) -> int:
    """The status a gateway code answers with (infery_proto.wire ``ERRORS``)."""
    kind = ERRORS.get(code)
    return kind.status if kind is not None else default


def from_envelope(status: int, envelope: bytes) -> tuple[str, bytes]:
    """(code, Anthropic error body) of an error written in OpenAI's envelope."""
    try:
        err = orjson.loads(envelope).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        err = None
    if not isinstance(err, dict):
        err = {}
    code = err.get("code") if isinstance(err.get("code"), str) else "upstream_error"
    message = err.get("message") if isinstance(err.get("message"), str) else "the provider failed"
    return str(code), error_body(status, str(code), str(message))


def error_response(res: TranslatedResponse) -> TranslatedResponse:
    """A translated error (OpenAI's envelope) in Anthropic's shape; a success unchanged."""
    if res.status < 400:
        return res
    code, body = from_envelope(res.status, res.body)
    return TranslatedResponse(res.status, body, res.usage, res.error_code or code)
