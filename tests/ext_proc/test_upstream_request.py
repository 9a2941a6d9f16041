"""The request to one provider (ext_proc/upstream_request.py): translated body, routing and
credential headers, the client's headers cut to the provider's allow-list, media limits."""

from __future__ import annotations

import orjson
import pytest
from infery_proto.v1 import config_pb2

from ext_proc import config
from ext_proc.endpoints import chat_completions, embeddings
from ext_proc.errors import GatewayError
from ext_proc.media_fetch import MediaPolicy
from ext_proc.upstream_request import upstream_request


def _model(kind: str) -> config.Model:
    cfg = config.build(
        [
            config_pb2.Provider(
                name="p", kind=kind, cluster="c", base_path="/base", host="api.example", api_key="sk"
            )
        ],
        [config_pb2.Model(slug="m", provider="p", upstream_model="up")],
        [],
        [],
        [],
    )
    return cfg.models["m"]


CHAT = chat_completions.ENDPOINT
ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def test_an_openai_request_goes_to_the_providers_host_and_path_with_its_credential():
    body, set_headers, remove = await upstream_request(
        _model("openai"), CHAT, dict(ASK), ["cookie", "user-agent", "authorization"], MediaPolicy()
    )
    headers = dict(set_headers)
    assert headers[":path"] == "/base/chat/completions" and headers[":authority"] == "api.example"
    assert headers["content-length"] == str(len(body)) and headers["authorization"] == "Bearer sk"
    assert orjson.loads(body)["model"] == "up"
    assert remove == ["cookie"]  # authorization is overwritten with the provider's, user-agent allowed


async def test_an_anthropic_request_is_translated_and_keeps_its_documented_options():
    body, set_headers, remove = await upstream_request(
        _model("anthropic"), CHAT, dict(ASK), ["anthropic-beta", "openai-project"], MediaPolicy()
    )
    headers = dict(set_headers)
    assert headers[":path"] == "/base/v1/messages" and headers["x-api-key"] == "sk"
    assert orjson.loads(body)["model"] == "up" and remove == ["openai-project"]


async def test_what_the_provider_cannot_do_is_refused_before_anything_is_sent():
    with pytest.raises(GatewayError) as err:
        await upstream_request(
            _model("anthropic"), embeddings.ENDPOINT, {"model": "m", "input": "x"}, [], MediaPolicy()
        )
    assert (err.value.status, err.value.code) == (400, "unsupported_endpoint")


async def test_more_media_urls_than_allowed_are_refused_before_any_is_fetched():
    parts = [{"type": "image_url", "image_url": {"url": f"https://img.example/{i}.png"}} for i in range(3)]
    ask = {"model": "m", "messages": [{"role": "user", "content": parts}]}
    with pytest.raises(GatewayError) as err:
        await upstream_request(_model("google"), CHAT, ask, [], MediaPolicy(max_urls=2))
    assert (err.value.status, err.value.code, err.value.param) == (400, "too_many_media_urls", "messages")
