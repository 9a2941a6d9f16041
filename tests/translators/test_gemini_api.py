"""What every Gemini pair shares (translators/gemini_api.py): provider errors → OpenAI's envelope,
and answers that cannot be read, the same for chat and embeddings."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ext_proc.translators import chat_gemini, embeddings_gemini
from ext_proc.translators.base import ResponseContext
from ext_proc.translators.gemini_api import GeminiTranslator, model_path
from tests.translators._support import as_body, error_of, shared_fixture

CTX = ResponseContext("gemini-2-5-flash", "gemini-2.5-flash", 1_760_000_000)
PAIRS = [chat_gemini.TRANSLATOR, embeddings_gemini.TRANSLATOR]
each_pair = pytest.mark.parametrize("translator", PAIRS, ids=lambda t: t.endpoint)


def shared_json(name: str) -> Any:
    return json.loads(shared_fixture(name))


def google_error(code: int, status: str, message: str = "boom", **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, **extra}}


ERRORS: list[tuple[int, Any, int, str, str | None]] = [
    (400, google_error(400, "INVALID_ARGUMENT", "bad schema"), 400, "invalid_request", "bad schema"),
    (400, shared_json("gemini_firebase_unary-failure-api-key.json"), 502, "upstream_error", None),
    (400, google_error(400, "FAILED_PRECONDITION", "User location is not supported"), 502, "upstream_error",
     None),
    (403, google_error(403, "PERMISSION_DENIED"), 502, "upstream_error", None),
    (404, shared_json("gemini_firebase_unary-failure-unknown-model.json"), 404, "model_not_found",
     "models/gemini-5.0-flash is not found for API version v1, or is not supported for generateContent. "
     "Call ListModels to see the list of available models and their supported methods."),
    (429, google_error(429, "RESOURCE_EXHAUSTED", "quota"), 429, "rate_limit_exceeded", None),
    (500, google_error(500, "INTERNAL"), 502, "upstream_error", None),
    (503, google_error(503, "UNAVAILABLE", "overloaded"), 503, "upstream_unavailable", None),
    (504, google_error(504, "DEADLINE_EXCEEDED"), 504, "upstream_timeout", None),
    (429, [google_error(429, "RESOURCE_EXHAUSTED")], 429, "rate_limit_exceeded", None),
    (502, b"<html>bad gateway</html>", 502, "upstream_error", None),
    (503, b"", 503, "upstream_unavailable", None),
]  # fmt: skip


@pytest.mark.parametrize(("status", "body", "client_status", "code", "message"), ERRORS)
@each_pair
def test_errors(
    translator: GeminiTranslator,
    status: int,
    body: Any,
    client_status: int,
    code: str,
    message: str | None,
) -> None:
    res = translator.response(status, as_body(body), CTX)
    out = error_of(res, client_status, code, message)
    assert "key1234" not in out["error"]["message"]


@each_pair
def test_unreadable_success_body(translator: GeminiTranslator) -> None:
    res = translator.response(200, b"<html>", CTX)
    assert (res.status, res.error_code) == (502, "upstream_error")


@each_pair
def test_an_error_object_in_a_success_is_the_providers_failure(translator: GeminiTranslator) -> None:
    res = translator.response(200, as_body(google_error(503, "UNAVAILABLE", "overloaded")), CTX)
    error_of(res, 503, "upstream_unavailable", None)


def test_model_path_is_quoted() -> None:
    assert model_path("models/gemini-2.5-flash") == "models/gemini-2.5-flash"
    assert model_path("../../admin?x=1") == "models/..%2F..%2Fadmin%3Fx%3D1"
