"""What every OpenAI-format pair shares (translators/openai_api.py): a provider error keeps OpenAI's
own request codes and ``param`` where they blame the caller's request, and never carries the
gateway's account details (key fragments, organisation ids) to the client."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ext_proc.translators import chat_openai, embeddings_openai, images_openai
from ext_proc.translators.base import ResponseContext
from ext_proc.translators.openai_api import OpenAIPassthrough
from tests.translators._support import as_body, error_of

CTX = ResponseContext("gpt-4o-mini", "gpt-4o-mini-2024-07-18", 1_760_000_000)
PAIRS = [chat_openai.TRANSLATOR, embeddings_openai.TRANSLATOR, images_openai.TRANSLATOR]
each_pair = pytest.mark.parametrize("translator", PAIRS, ids=lambda t: t.endpoint)


def openai_error(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


# provider status, body, client status, code, message (None: the gateway's wording), param
ERRORS: list[tuple[int, Any, int, str, str | None, str | None]] = [
    (400, openai_error("'messages' must contain 'json'", "invalid_request_error", "messages",
                       "invalid_value"),
     400, "invalid_value", "'messages' must contain 'json'", "messages"),
    (400, openai_error("This model's maximum context length is 128000 tokens", "invalid_request_error",
                       "messages", "context_length_exceeded"),
     400, "context_length_exceeded", "This model's maximum context length is 128000 tokens", "messages"),
    (400, openai_error("Unknown thing", "invalid_request_error", "tools[0].function.name", "some_new_code"),
     400, "invalid_request", "Unknown thing", "tools[0].function.name"),
    (400, openai_error("bad", "invalid_request_error", "not a <param> path", "invalid_value"),
     400, "invalid_value", "bad", None),
    (422, {"error": "Input validation error"}, 400, "invalid_request", "Input validation error", None),
    (404, openai_error("The model `gpt-x` does not exist", "invalid_request_error", "model",
                       "model_not_found"),
     404, "model_not_found", "The model `gpt-x` does not exist", "model"),
    (413, openai_error("Request too large", "invalid_request_error"), 413, "request_too_large",
     "Request too large", None),
    (401, openai_error("Incorrect API key provided: sk-proj-****abcd.", "invalid_request_error",
                       code="invalid_api_key"),
     502, "upstream_error", None, None),
    (429, openai_error("Rate limit reached for gpt-4o in organization org-gateway123 on tokens per min",
                       "tokens", code="rate_limit_exceeded"),
     429, "rate_limit_exceeded", None, None),
    (500, openai_error("The server had an error (request req_abc, org org-gateway123)", "server_error"),
     502, "upstream_error", None, None),
    (503, b"<html>overloaded</html>", 503, "upstream_unavailable", None, None),
    (504, b"", 504, "upstream_timeout", None, None),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "client_status", "code", "message", "param"), ERRORS)
@each_pair
def test_errors(
    translator: OpenAIPassthrough,
    status: int,
    body: Any,
    client_status: int,
    code: str,
    message: str | None,
    param: str | None,
) -> None:
    res = translator.response(status, as_body(body), CTX)
    out = error_of(res, client_status, code, message)
    assert out["error"]["param"] == param


@pytest.mark.parametrize("status", [401, 403, 429, 500, 502, 503])
@each_pair
def test_the_gateways_account_never_reaches_the_client(translator: OpenAIPassthrough, status: int) -> None:
    """An attack on the gateway's secrets: a provider message naming its key or organisation."""
    body = openai_error("Incorrect API key provided: sk-proj-****abcd; organization org-gateway123", "x")
    out = orjson.loads(translator.response(status, orjson.dumps(body), CTX).body)
    assert "abcd" not in out["error"]["message"] and "org-gateway123" not in out["error"]["message"]
    assert out["error"]["message"] == f"the provider returned HTTP {status}"
