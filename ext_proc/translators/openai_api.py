"""The OpenAI wire format, as every pair that speaks it shares it: OpenAI, xAI, OpenAI-compatible servers.

The client's request already has the provider's shape, so the translation is a
rewrite of ``model`` (and the removal of what a kind of server rejects) on the
way out, and on the way back a rewrite of ``model`` to the slug that served, with
usage read and errors kept in OpenAI's own terms. A pair adds what its endpoint
needs on top: its path, and for chat the stream (``chat_openai.py``).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import orjson

from . import usage as provider_usage
from .base import ResponseContext, Target, TranslatedResponse, Translator, UpstreamRequest, Usage
from .provider_errors import failed, openai_error

# Parameters a provider of this wire format rejects although OpenAI accepts
# them, and that change nothing the caller relies on when dropped.
_DROP_BY_KIND: dict[str, tuple[str, ...]] = {
    "xai": ("store", "service_tier", "prediction", "modalities", "audio"),
    "openai_compatible": ("store", "service_tier", "prediction", "metadata"),
}

MODEL_FIELD = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


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


class OpenAIPassthrough(Translator):
    """An endpoint whose provider speaks OpenAI's own API: the body goes through, renamed."""

    __slots__ = ()

    wire_format = "openai"
    path: ClassVar[str]  # the endpoint's path under the provider's base URL

    def request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        body["model"] = target.upstream_model
        for name in _DROP_BY_KIND.get(target.kind, ()):
            body.pop(name, None)
        return UpstreamRequest(
            path=target.base_path + self.path,
            headers={"authorization": "Bearer " + target.api_key, "content-type": "application/json"},
            body=orjson.dumps(body),
        )

    def response(self, status: int, body: bytes, ctx: ResponseContext) -> TranslatedResponse:
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
            body = MODEL_FIELD.sub(lambda _: served, body, count=1)
        return TranslatedResponse(status, body, self.usage(doc))

    def usage(self, doc: dict[str, Any]) -> Usage | None:
        """The provider's usage in an answer of this endpoint."""
        return provider_usage.openai(doc)
