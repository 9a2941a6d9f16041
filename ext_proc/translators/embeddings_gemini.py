"""OpenAI Embeddings ⇄ Gemini's ``batchEmbedContents``.

One Gemini request per input (``dimensions`` → ``outputDimensionality``); token
arrays are refused (400 ``unsupported_parameter``). Gemini returns no token count
for embeddings, so usage is the gateway's estimate, ceil(characters / 4) per input,
and ``encoding_format: base64`` is OpenAI's little-endian float32: both read the
client's request (``ResponseContext.request``).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from typing import Any

import orjson

from ..errors import GatewayError
from ..token_estimate import tokens_for_chars
from . import params
from .base import ResponseContext, Target, TranslatedResponse, UpstreamRequest, Usage
from .gemini_api import GeminiTranslator, integer, model_path, upstream


def estimate_tokens(inputs: Any) -> int:
    """Gemini reports no tokens for embeddings: the gateway's estimate (token_estimate.py) per input."""
    texts = [inputs] if isinstance(inputs, str) else inputs if isinstance(inputs, list) else []
    return sum(tokens_for_chars(len(t)) for t in texts if isinstance(t, str))


class EmbeddingsGemini(GeminiTranslator):
    """Stateless; one instance serves every request."""

    __slots__ = ()

    endpoint = "embeddings"

    def request(self, body: dict[str, Any], target: Target) -> UpstreamRequest:
        return upstream(target, ":batchEmbedContents", _embed_request(body, target.upstream_model))

    def answer(self, doc: dict[str, Any], ctx: ResponseContext) -> TranslatedResponse:
        out, tokens = _embeddings(doc, ctx, ctx.request)
        return TranslatedResponse(200, orjson.dumps(out), tokens)


TRANSLATOR = EmbeddingsGemini()


def _embed_request(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    inputs = body.get("input")
    if isinstance(inputs, str):
        texts = [inputs]
    elif isinstance(inputs, list) and inputs and all(isinstance(t, str) for t in inputs):
        texts = inputs
    elif isinstance(inputs, list) and inputs and all(isinstance(t, int | list) for t in inputs):
        raise GatewayError(
            400, "unsupported_parameter", "token arrays are not supported by this model's provider", "input"
        )
    else:
        raise params.invalid("input", "input must be a string or an array of strings")
    fmt = body.get("encoding_format")
    if fmt not in (None, "float", "base64"):
        raise params.invalid("encoding_format", "encoding_format must be float or base64")
    dims = integer(body, "dimensions", 1)
    name = model_path(model)
    requests = []
    for text in texts:
        req: dict[str, Any] = {"model": name, "content": {"parts": [{"text": text}]}}
        if dims is not None:
            req["outputDimensionality"] = dims
        requests.append(req)
    return {"requests": requests}


def _embeddings(
    doc: Mapping[str, Any], ctx: ResponseContext, request: Mapping[str, Any]
) -> tuple[dict[str, Any], Usage]:
    as_base64 = request.get("encoding_format") == "base64"
    data = []
    for i, emb in enumerate(doc.get("embeddings") or []):
        values = emb.get("values") or [] if isinstance(emb, dict) else []
        vector: Any = values
        if as_base64:
            vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = estimate_tokens(request.get("input"))
    out = {
        "object": "list",
        "data": data,
        "model": ctx.slug,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return out, Usage(input_tokens=tokens, estimated=True)
