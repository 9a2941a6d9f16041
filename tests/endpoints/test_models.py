"""``GET /v1/models``: each model names the paths it serves (an extra field), from the registry of
endpoints and translators, so a new endpoint or pair shows up there by itself."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from infery_proto.v1 import config_pb2

from ext_proc import config
from ext_proc.auth import authenticate
from ext_proc.endpoints.models import models, served_paths
from tests.conformance import assert_openai

KEY = "inf_catalog"
OPENAI = (
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/images/generations",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/moderations",
    "/v1/completions",
    "/v1/audio/speech",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
    "/v1/responses",
)
XAI = tuple(p for p in OPENAI if not p.startswith("/v1/audio/"))  # xAI's API has no audio endpoints
SERVED = {
    "openai": OPENAI,
    "anthropic": ("/v1/chat/completions", "/v1/messages", "/v1/messages/count_tokens", "/v1/responses"),
    "gemini": (
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/audio/transcriptions",
        "/v1/audio/translations",
        "/v1/responses",
    ),
}


@pytest.mark.parametrize(("wire", "paths"), SERVED.items())
def test_the_paths_a_wire_format_serves(wire: str, paths: tuple[str, ...]) -> None:
    assert served_paths(wire) == paths


def test_each_model_lists_its_endpoints() -> None:
    kinds = {"o": "openai", "x": "xai", "a": "anthropic", "g": "google"}
    cfg = config.build(
        [
            config_pb2.Provider(name=n, kind=k, cluster=f"provider_{n}", base_path="", host="h", api_key="k")
            for n, k in kinds.items()
        ],
        [config_pb2.Model(slug=f"m-{n}", provider=n, upstream_model="u") for n in kinds],
        [config_pb2.Workspace(id="w", name="w", price_multiplier="1")],
        [
            config_pb2.ApiKey(
                id="k", key_hash=hashlib.sha256(KEY.encode()).hexdigest(), workspace_id="w", member_id="m"
            )
        ],
        [],
    )
    key = authenticate(None, KEY, cfg)
    status, body = models("/v1/models", key, cfg)
    listed = {m["id"]: m for m in orjson.loads(body)["data"]}
    assert status == 200
    for model in listed.values():
        assert_openai(model, "Model")  # the extra field leaves it a valid Model
    assert {slug: tuple(m["endpoints"]) for slug, m in listed.items()} == {
        "m-o": OPENAI,
        "m-x": XAI,
        "m-a": SERVED["anthropic"],
        "m-g": SERVED["gemini"],
    }
    status, body = models("/v1/models/m-a", key, cfg)
    assert status == 200 and tuple(orjson.loads(body)["endpoints"]) == SERVED["anthropic"]
