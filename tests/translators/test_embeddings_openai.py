"""OpenAI embeddings ⇄ the OpenAI wire format: passed through with ``model`` rewritten both ways,
input tokens read from the answer."""

from __future__ import annotations

import orjson
import pytest

from ext_proc.translators.base import ResponseContext, Target, Usage
from ext_proc.translators.embeddings_openai import EmbeddingsOpenAI
from tests.conformance import assert_openai

CTX = ResponseContext("text-embedding-3-small", "text-embedding-3-small-v2", 1_760_000_000)
BODY = {"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 8, "encoding_format": "float"}
ANSWER = {
    "object": "list",
    "data": [
        {"object": "embedding", "index": 0, "embedding": [0.1, -0.2]},
        {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]},
    ],
    "model": "text-embedding-3-small-v2",
    "usage": {"prompt_tokens": 2, "total_tokens": 2},
}


@pytest.mark.parametrize("kind", ["openai", "openai_compatible"])
def test_the_body_passes_through_with_the_providers_model(kind: str) -> None:
    upstream = EmbeddingsOpenAI().request(
        dict(BODY), Target(kind, "/v1", "sk-p", "text-embedding-3-small-v2")
    )
    assert upstream.path == "/v1/embeddings"
    assert upstream.headers == {"authorization": "Bearer sk-p", "content-type": "application/json"}
    out = orjson.loads(upstream.body)
    assert_openai(out, "CreateEmbeddingRequest")
    assert out == {**BODY, "model": "text-embedding-3-small-v2"}
    assert EmbeddingsOpenAI().media_urls(BODY) == []


def test_the_answer_names_the_slug_and_its_input_tokens_are_read() -> None:
    res = EmbeddingsOpenAI().response(200, orjson.dumps(ANSWER), CTX)
    out = orjson.loads(res.body)
    assert_openai(out, "CreateEmbeddingResponse")
    assert out == {**ANSWER, "model": "text-embedding-3-small"}
    assert res.usage == Usage(input_tokens=2)  # a list of vectors is no image: nothing priced per image


def test_an_error_is_openais_envelope() -> None:
    body = {"error": {"message": "bad dims", "type": "invalid_request_error", "param": "dimensions",
                      "code": "invalid_value"}}  # fmt: skip
    res = EmbeddingsOpenAI().response(400, orjson.dumps(body), CTX)
    assert (res.status, res.error_code) == (400, "invalid_value")
    assert orjson.loads(res.body)["error"]["param"] == "dimensions"


def test_answers_are_never_streamed() -> None:
    with pytest.raises(TypeError):
        EmbeddingsOpenAI().stream(CTX)
