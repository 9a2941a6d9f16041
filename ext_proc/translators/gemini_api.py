"""The Gemini API (v1beta), as every pair that speaks it shares it.

Each Gemini method is ``POST {base}/v1beta/models/{model}:{method}`` with the key in
``x-goog-api-key``; errors are ``google.rpc`` statuses, sometimes wrapped in a
one-element array. A pair (``chat_gemini.py``, ``embeddings_gemini.py``) builds its
method's body and reads its answer; the path, the headers, the unreadable or error
answer and the error table are here once.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from . import params, provider_errors
from .base import ResponseContext, Target, TranslatedResponse, Translator, UpstreamRequest

# google.rpc status -> what the client gets
ERRORS = provider_errors.ErrorMap(
    "status",
    {
        "INVALID_ARGUMENT": provider_errors.INVALID_REQUEST,
        "OUT_OF_RANGE": provider_errors.INVALID_REQUEST,
        "UNIMPLEMENTED": provider_errors.INVALID_REQUEST,
        "NOT_FOUND": provider_errors.MODEL_NOT_FOUND,
        "FAILED_PRECONDITION": provider_errors.UPSTREAM_ERROR,  # billing / region of the gateway's account
        "UNAUTHENTICATED": provider_errors.UPSTREAM_ERROR,
        "PERMISSION_DENIED": provider_errors.UPSTREAM_ERROR,
        "RESOURCE_EXHAUSTED": provider_errors.RATE_LIMITED,
        "UNAVAILABLE": provider_errors.UPSTREAM_UNAVAILABLE,
        "DEADLINE_EXCEEDED": provider_errors.UPSTREAM_TIMEOUT,
        "INTERNAL": provider_errors.UPSTREAM_ERROR,
        "UNKNOWN": provider_errors.UPSTREAM_ERROR,
        "ABORTED": provider_errors.UPSTREAM_ERROR,
        "CANCELLED": provider_errors.UPSTREAM_ERROR,
    },
    # Gemini field (snake_case; Gemini writes both cases) -> the OpenAI parameter it came from
    params={
        "max_output_tokens": "max_tokens",
        "temperature": "temperature",
        "top_p": "top_p",
        "candidate_count": "n",
        "stop_sequences": "stop",
        "presence_penalty": "presence_penalty",
        "frequency_penalty": "frequency_penalty",
        "seed": "seed",
        "response_logprobs": "logprobs",
        "logprobs": "top_logprobs",
        "contents": "messages",
        "system_instruction": "messages",
        "tools": "tools",
        "tool_config": "tool_choice",
        "response_mime_type": "response_format",
        "response_schema": "response_format",
        "response_json_schema": "response_format",
        "thinking_config": "reasoning_effort",
    },
    blamed=lambda err, message: _blamed_field(err, message),
)
# Where Gemini names the field it refuses, when no BadRequest detail does.
_FIELD_IN_MESSAGE = re.compile(r"Invalid value at '([^']+)'|^\* \w+\.([\w.\[\]]+):")


def _blamed_field(err: Mapping[str, Any], message: str) -> str | None:
    for detail in err.get("details") or ():
        for violation in (detail.get("fieldViolations") or ()) if isinstance(detail, dict) else ():
            if isinstance(violation, dict) and isinstance(violation.get("field"), str):
                return str(violation["field"])
    found = _FIELD_IN_MESSAGE.search(message)
    return (found.group(1) or found.group(2)) if found else None


def model_path(model: str) -> str:
    """``models/<name>``, quoted so a model name can never alter the request path."""
    return "models/" + quote(model.removeprefix("models/"), safe="-._~@")


def integer(body: Mapping[str, Any], name: str, minimum: int = 0) -> int | None:
    """An integer parameter of the client's request, at least ``minimum``; None when absent."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise params.invalid(name, f"{name} must be an integer >= {minimum}")
    return value


class GeminiTranslator(Translator):
    """A pair whose provider speaks the Gemini API: its request, and its answer once the
    errors every Gemini method shares are handled."""

    __slots__ = ()

    wire_format = "gemini"

    def response(self, status: int, body: bytes, ctx: ResponseContext) -> TranslatedResponse:
        if status >= 400:
            return error_response(status, body, ctx.request)
        doc = document(body)
        if not isinstance(doc, dict):
            return provider_errors.failed(
                502, "upstream_error", "the provider returned an unreadable response"
            )
        if isinstance(doc.get("error"), dict):
            return provider_errors.error_from(502, doc, error_fields, ctx.request)
        return self.answer(doc, ctx)

    @abstractmethod
    def answer(self, doc: dict[str, Any], ctx: ResponseContext) -> TranslatedResponse:
        """The client's response to a successful answer (a JSON object)."""


def upstream(target: Target, method: str, out: Mapping[str, Any]) -> UpstreamRequest:
    """The request of ``out`` to Gemini's ``method`` (``:generateContent``, ...) of the target's model."""
    path = f"{target.base_path}/v1beta/{model_path(target.upstream_model)}{method}"
    headers = {"x-goog-api-key": target.api_key, "content-type": "application/json"}
    return UpstreamRequest(path=path, headers=headers, body=orjson.dumps(out))


def document(body: bytes) -> Any:
    """The parsed body; Gemini may wrap it (an error, notably) in a one-element array."""
    doc = provider_errors.json_or_none(body)
    if isinstance(doc, list) and doc:
        return doc[0]
    return doc


def error_response(status: int, body: bytes, request: Mapping[str, Any]) -> TranslatedResponse:
    return provider_errors.error_from(status, document(body), error_fields, request)


def error_fields(
    err: Mapping[str, Any], default: provider_errors.ClientError, request: Mapping[str, Any]
) -> provider_errors.ClientError:
    if _is_key_error(err):
        return provider_errors.ClientError(
            502, "upstream_error", "the provider rejected the gateway's credentials"
        )
    return ERRORS.fields(err, default, request)


def _is_key_error(err: Mapping[str, Any]) -> bool:
    """A bad API key is a 400 INVALID_ARGUMENT at Google, but it is the gateway's fault."""
    for detail in err.get("details") or []:
        if isinstance(detail, dict) and str(detail.get("reason", "")).startswith("API_KEY"):
            return True
    return False
