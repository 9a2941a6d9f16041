"""OpenAI image generations ⇄ the OpenAI wire format: passed through with ``model`` rewritten both
ways; the images made are counted for the per-image price, with any token usage the provider reports."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ext_proc.translators.base import ResponseContext, Target, Usage
from ext_proc.translators.images_openai import ImagesOpenAI
from tests.conformance import assert_openai

CTX = ResponseContext("dall-e-3", "dall-e-3", 1_760_000_000)
BODY = {"model": "dall-e-3", "prompt": "a lighthouse", "n": 2, "response_format": "b64_json"}
TWO = {"created": 1760000000, "data": [{"b64_json": "aGk="}, {"b64_json": "aG8="}]}


@pytest.mark.parametrize("kind", ["openai", "xai"])
def test_the_body_passes_through_with_the_providers_model(kind: str) -> None:
    upstream = ImagesOpenAI().request(dict(BODY), Target(kind, "/v1", "sk-p", "grok-2-image"))
    assert upstream.path == "/v1/images/generations"
    assert upstream.headers == {"authorization": "Bearer sk-p", "content-type": "application/json"}
    out = orjson.loads(upstream.body)
    assert_openai(out, "CreateImageRequest")
    assert out == {**BODY, "model": "grok-2-image"}


@pytest.mark.parametrize(
    ("answer", "usage"),
    [
        (TWO, Usage(images=2)),  # DALL·E reports no usage: priced per image
        (
            {**TWO, "usage": {"input_tokens": 12, "output_tokens": 4160, "total_tokens": 4172,
                              "input_tokens_details": {"text_tokens": 12, "image_tokens": 0}}},
            Usage(input_tokens=12, output_tokens=4160, images=2),
        ),  # gpt-image-1 reports tokens too
        ({"created": 1, "data": []}, None),
        ({"created": 1, "data": "x"}, None),
    ],
)  # fmt: skip
def test_images_are_counted(answer: dict[str, Any], usage: Usage | None) -> None:
    res = ImagesOpenAI().response(200, orjson.dumps(answer), CTX)
    assert res.status == 200 and res.usage == usage


def test_the_answer_is_openais() -> None:
    res = ImagesOpenAI().response(200, orjson.dumps(TWO), CTX)
    assert res.body == orjson.dumps(TWO)
    assert_openai(orjson.loads(res.body), "ImagesResponse")


def test_answers_are_never_streamed() -> None:
    with pytest.raises(TypeError):
        ImagesOpenAI().stream(CTX)
