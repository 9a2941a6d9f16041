"""OpenAI embeddings ⇄ Gemini ``batchEmbedContents``: the request checked against Gemini's own
proto type, the answer against the OpenAI spec, and the gateway's usage estimate."""

from __future__ import annotations

import base64
import struct
from dataclasses import replace
from typing import Any

import orjson
import pytest
from google.ai import generativelanguage_v1beta as glm
from google.protobuf import json_format

from ext_proc.errors import GatewayError
from ext_proc.translators.base import ResponseContext, Target, Usage
from ext_proc.translators.embeddings_gemini import EmbeddingsGemini, estimate_tokens
from tests.conformance import assert_openai
from tests.translators._support import own_fixture

CTX = ResponseContext("gemini-2-5-flash", "gemini-2.5-flash", 1_760_000_000)


def target(model: str = "gemini-embedding-001") -> Target:
    return Target("google", "/g", "AIza-test", model, {})


# --------------------------------------------------------------------- request


def embed(body: dict[str, Any], model: str = "gemini-embedding-001") -> dict[str, Any]:
    upstream = EmbeddingsGemini().request(body, target(model))
    assert upstream.path == f"/g/v1beta/models/{model}:batchEmbedContents"
    assert upstream.headers["x-goog-api-key"] == "AIza-test"
    out: dict[str, Any] = orjson.loads(upstream.body)
    json_format.ParseDict(out, glm.BatchEmbedContentsRequest.pb()(), ignore_unknown_fields=False)
    return out


def test_embeddings_request() -> None:
    out = embed({"model": "e", "input": ["a", "bb"], "dimensions": 256, "encoding_format": "base64"})
    assert out == {
        "requests": [
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": "a"}]},
                "outputDimensionality": 256,
            },
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": "bb"}]},
                "outputDimensionality": 256,
            },
        ]
    }
    assert embed({"model": "e", "input": "one"}) == {
        "requests": [{"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "one"}]}}]
    }


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"input": [1, 2, 3]}, "unsupported_parameter", "input"),
        ({"input": [[1, 2], [3]]}, "unsupported_parameter", "input"),
        ({"input": []}, "invalid_request", "input"),
        ({"input": "x", "encoding_format": "int8"}, "invalid_request", "encoding_format"),
        ({"input": "x", "dimensions": 0}, "invalid_request", "dimensions"),
    ],
)
def test_embeddings_rejected(body: dict[str, Any], code: str, param: str) -> None:
    with pytest.raises(GatewayError) as info:
        EmbeddingsGemini().request(body, target("gemini-embedding-001"))
    assert (info.value.status, info.value.code, info.value.param) == (400, code, param)


def test_no_media_urls() -> None:
    assert EmbeddingsGemini().media_urls({"input": "https://x.test/a.png"}) == []


# -------------------------------------------------------------------- response


def test_embeddings_floats() -> None:
    request = {"model": "e", "input": ["hello world", "abc"]}
    res = EmbeddingsGemini().response(
        200, own_fixture("gemini_embeddings.json"), replace(CTX, request=request)
    )
    out = orjson.loads(res.body)
    assert_openai(out, "CreateEmbeddingResponse")
    assert [d["embedding"] for d in out["data"]] == [[0.5, -0.25, 0.125], [1.0, 0.0, -1.5]]
    assert [d["index"] for d in out["data"]] == [0, 1]
    assert out["usage"] == {"prompt_tokens": 4, "total_tokens": 4}  # ceil(11/4) + ceil(3/4)
    assert res.usage == Usage(input_tokens=4, estimated=True)  # Gemini reports none: the gateway estimates


def test_embeddings_base64_is_little_endian_float32() -> None:
    request = {"model": "e", "input": "hello", "encoding_format": "base64"}
    res = EmbeddingsGemini().response(
        200, own_fixture("gemini_embeddings.json"), replace(CTX, request=request)
    )
    out = orjson.loads(res.body)
    vectors = [struct.unpack("<3f", base64.b64decode(d["embedding"])) for d in out["data"]]
    assert vectors == [(0.5, -0.25, 0.125), (1.0, 0.0, -1.5)]
    # the spec only describes the float form: check the rest of the shape with the vectors decoded
    for d, v in zip(out["data"], vectors, strict=True):
        d["embedding"] = list(v)
    assert_openai(out, "CreateEmbeddingResponse")
    assert res.usage == Usage(input_tokens=2, estimated=True)


def test_embeddings_without_the_request() -> None:
    res = EmbeddingsGemini().response(200, own_fixture("gemini_embeddings.json"), CTX)
    out = orjson.loads(res.body)
    assert out["data"][1]["embedding"] == [1.0, 0.0, -1.5] and out["usage"]["prompt_tokens"] == 0


@pytest.mark.parametrize(
    ("inputs", "tokens"), [("", 0), ("abcd", 1), ("abcde", 2), (["a", "bb", "ccccc"], 4)]
)
def test_token_estimate(inputs: Any, tokens: int) -> None:
    assert estimate_tokens(inputs) == tokens


def test_answers_are_never_streamed() -> None:
    with pytest.raises(TypeError):
        EmbeddingsGemini().stream(CTX)
