"""A provider's error, as the client gets it: OpenAI's envelope, code and ``param``.

Every translator maps provider errors by the same rules, whatever the endpoint:
which provider error kinds pass the provider's message on (only the caller's own
mistakes do), which OpenAI code and parameter a 400 becomes, and what an
OpenAI-format provider's own error keeps. They live here once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson
from infery_proto.wire import OPENAI_REQUEST_CODES

from ..errors import envelope, upstream_status
from .base import TranslatedResponse


@dataclass(frozen=True, slots=True)
class ClientError:
    """What the client gets for a provider's error: OpenAI's envelope fields."""

    status: int
    code: str
    message: str
    param: str | None = None


# (provider error object, the outcome when the object says nothing better, the client's
# OpenAI request) -> outcome
ErrorFields = Callable[[Mapping[str, Any], ClientError, Mapping[str, Any]], ClientError]

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


def failed(status: int, code: str, message: str, param: str | None = None) -> TranslatedResponse:
    return TranslatedResponse(status, envelope(status, code, message, param), None, code)


def json_or_none(body: bytes) -> Any:
    """The parsed body; None when it is not JSON (an HTML error page from a proxy, say)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


# A request field path as OpenAI writes ``param`` (``messages[0].content``, ``tools.1.function``).
PARAM_PATH = re.compile(r"[a-z_][a-z0-9_]*(?:[.\[][A-Za-z0-9_.\[\]]*)?")
_MAX_PARAM = 200
_CONTEXT_TOO_LONG = re.compile(
    r"prompt is too long|input token count.*exceeds|context (?:length|window)", re.I
)
_MISSING = re.compile(r"field required|is required|is not specified|must be specified", re.I)
_WRONG_TYPE = re.compile(r"input should be a valid", re.I)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def openai_param(path: str, names: Mapping[str, str], request: Mapping[str, Any]) -> str | None:
    """The OpenAI parameter a provider's field path blames (``generationConfig.maxOutputTokens``).

    The first segment of ``path`` that ``names`` knows (provider field, snake_case -> OpenAI
    parameter) decides. OpenAI has two names for the output limit: the one the caller used.
    """
    for segment in re.split(r"[.\[\]]+", path):
        name = names.get(_CAMEL.sub("_", segment).lower())
        if name is not None:
            if name == "max_tokens" and request.get("max_completion_tokens") is not None:
                return "max_completion_tokens"
            return name
    return None


@dataclass(frozen=True, slots=True)
class ErrorMap:
    """One provider's error kinds mapped to the outcomes above.

    ``field`` names the kind in the provider's error object; ``table`` maps kind -> outcome.
    A request the caller can fix (400) also gets the closest OpenAI code and the OpenAI
    ``param`` the provider blamed: ``blamed`` finds the provider's field path in its error
    object, ``params`` names the OpenAI parameter behind each provider field.
    """

    field: str  # the error object's field naming the kind
    table: Mapping[str, tuple[int, str, bool]]
    params: Mapping[str, str]
    blamed: Callable[[Mapping[str, Any], str], str | None]

    def fields(self, err: Mapping[str, Any], default: ClientError, request: Mapping[str, Any]) -> ClientError:
        """The client's error for ``err``; an unknown kind keeps ``default``'s status and code."""
        mapped = self.table.get(str(err.get(self.field)))
        provider_msg = err.get("message") if isinstance(err.get("message"), str) else None
        if mapped is None:
            return replace(default, message=provider_msg or default.message)
        status, code, passthrough = mapped
        if not (passthrough and provider_msg):
            return ClientError(status, code, f"the provider answered {err.get(self.field)}")
        if status != 400:
            return ClientError(status, code, provider_msg)
        if _CONTEXT_TOO_LONG.search(provider_msg):
            return ClientError(400, "context_length_exceeded", provider_msg, "messages")
        path = self.blamed(err, provider_msg)
        param = openai_param(path, self.params, request) if path else None
        if param is None:
            return ClientError(400, code, provider_msg)
        if _MISSING.search(provider_msg):
            code = "missing_required_parameter"
        elif _WRONG_TYPE.search(provider_msg):
            code = "invalid_type"
        else:
            code = "invalid_value"
        return ClientError(400, code, provider_msg, param)


def error_from(status: int, doc: Any, fields: ErrorFields, request: Mapping[str, Any]) -> TranslatedResponse:
    """A provider error response (``doc``: its parsed body) in OpenAI's envelope."""
    client_status, code = upstream_status(status)
    outcome = ClientError(client_status, code, f"the provider returned HTTP {status}")
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        outcome = fields(err, outcome, request)
    return failed(outcome.status, outcome.code, outcome.message, outcome.param)


def openai_error(status: int, err: Mapping[str, Any]) -> ClientError:
    """An OpenAI-format provider's error object. Where it blames the caller's request (400, 404,
    413): its message, and its code and ``param`` where they are OpenAI's own. Otherwise the
    gateway's wording, as for every provider: a 401's or a 429's message names the gateway's own
    account (``Incorrect API key provided: sk-...abcd``, ``in organization org-...``)."""
    client_status, code = upstream_status(status)
    wording = f"the provider returned HTTP {status}"
    if client_status not in (400, 404, 413):
        return ClientError(client_status, code, wording)
    message = err.get("message") if isinstance(err.get("message"), str) else None
    outcome = ClientError(client_status, code, message or wording)
    given = err.get("code")
    if client_status == 400 and isinstance(given, str) and given in OPENAI_REQUEST_CODES:
        outcome = replace(outcome, code=given)
    param = err.get("param")
    if isinstance(param, str) and len(param) <= _MAX_PARAM and PARAM_PATH.fullmatch(param):
        outcome = replace(outcome, param=param)
    return outcome
