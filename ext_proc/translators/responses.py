"""OpenAI chat responses and error envelopes built from another provider's answer.

Every translator that rewrites a provider's answer (rather than passing
OpenAI's own through) must produce the same OpenAI shapes and map provider
errors by the same rules; both live here once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import envelope, upstream_status
from .base import ResponseContext, TranslatedResponse, Usage

# (provider error object, status, code, fallback message) -> (status, code, message)
ErrorFields = Callable[[Mapping[str, Any], int, str, str], tuple[int, str, str]]

# What a provider's error kind becomes: (client status, code, pass the provider's message on).
# Only the caller's own mistakes carry the provider's explanation: the others may
# name the gateway's account (organisation ids, key fragments), which must not
# reach the client, so they get the gateway's wording.
INVALID_REQUEST = (400, "invalid_request", True)
MODEL_NOT_FOUND = (404, "model_not_found", True)
REQUEST_TOO_LARGE = (413, "request_too_large", True)
RATE_LIMITED = (429, "rate_limit_exceeded", False)
UPSTREAM_ERROR = (502, "upstream_error", False)
UPSTREAM_UNAVAILABLE = (503, "upstream_unavailable", False)
UPSTREAM_TIMEOUT = (504, "upstream_timeout", False)


def chat_id(provider_id: Any) -> str:
    """``chatcmpl-`` and the provider's id, so a response can be traced upstream; random without one."""
    return "chatcmpl-" + str(provider_id or secrets.token_hex(12))


def usage_doc(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def tool_call(call_id: Any, name: Any, args: Any) -> dict[str, Any]:
    """A complete ``tool_calls`` entry; OpenAI carries the arguments as a JSON string."""
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(args or {}).decode()},
    }


def assistant_message(text: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """``content`` is null only beside tool calls, as OpenAI answers."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text or (None if calls else ""),
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    return message


def completion(
    provider_id: Any, ctx: ResponseContext, choices: list[dict[str, Any]], usage: Usage
) -> dict[str, Any]:
    return {
        "id": chat_id(provider_id),
        "object": "chat.completion",
        "created": ctx.created,
        "model": ctx.upstream_model,
        "choices": choices,
        "usage": usage_doc(usage),
    }


def failed(status: int, code: str, message: str) -> TranslatedResponse:
    return TranslatedResponse(status, envelope(status, code, message), None, code)


def json_or_none(body: bytes) -> Any:
    """The parsed body; None when it is not JSON (an HTML error page from a proxy, say)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


@dataclass(frozen=True, slots=True)
class ErrorMap:
    """One provider's error kinds mapped to the outcomes above.

    ``field`` names the kind in the provider's error object; ``table`` maps kind -> outcome.
    """

    field: str  # the error object's field naming the kind
    table: Mapping[str, tuple[int, str, bool]]

    def fields(self, err: Mapping[str, Any], status: int, code: str, fallback: str) -> tuple[int, str, str]:
        """(status, code, message) for ``err``; an unknown kind keeps ``status`` and ``code``."""
        mapped = self.table.get(str(err.get(self.field)))
        provider_msg = err.get("message") if isinstance(err.get("message"), str) else None
        if mapped is None:
            return status, code, provider_msg or fallback
        status, code, passthrough = mapped
        if passthrough and provider_msg:
            return status, code, provider_msg
        return status, code, f"the provider answered {err.get(self.field)}"


def error_from(status: int, doc: Any, fields: ErrorFields) -> TranslatedResponse:
    """A provider error response (``doc``: its parsed body) in OpenAI's envelope."""
    client_status, code = upstream_status(status)
    message = f"the provider returned HTTP {status}"
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        client_status, code, message = fields(err, client_status, code, message)
    return failed(client_status, code, message)
