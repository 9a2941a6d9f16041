"""Embeddings, image generations and the model list through the gateway."""

from __future__ import annotations

import json
from decimal import Decimal

import openai
import pytest

from infery.stack import Stack
from tests.conformance import assert_openai
from tests.e2e.support import SIM_KEY, Admin, Tenant, eventually


def test_embeddings_pass_through_and_charged(client: openai.OpenAI, admin: Admin):
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["first text", "second text here"], encoding_format="float"
    )
    body = json.loads(raw.http_response.content)
    assert_openai(body, "CreateEmbeddingResponse")
    assert len(body["data"]) == 2
    assert raw.headers["x-model-used"] == "text-embedding-3-small"
    credits = Decimal(raw.headers["x-credits-used"])
    assert credits == body["usage"]["prompt_tokens"] * Decimal("0.02") / 1_000_000
    record = eventually(lambda: admin.usage_record(raw.headers["x-request-id"]))
    assert record["endpoint"] == "/v1/embeddings" and Decimal(record["credits"]) == credits


def test_image_generation_charged_per_image(client: openai.OpenAI):
    raw = client.images.with_raw_response.generate(
        model="dall-e-3", prompt="a lighthouse", n=2, response_format="b64_json"
    )
    body = json.loads(raw.http_response.content)
    assert_openai(body, "ImagesResponse")
    assert len(body["data"]) == 2
    assert Decimal(raw.headers["x-credits-used"]) == 2 * Decimal("0.04")


def test_models_list_and_retrieve(client: openai.OpenAI):
    models = {m.id: m for m in client.models.list()}
    assert {"gpt-4o-mini", "text-embedding-3-small", "dall-e-3"} <= set(models)
    assert models["gpt-4o-mini"].owned_by == "sim-openai"
    one = client.models.retrieve("gpt-4o-mini")
    assert one.id == "gpt-4o-mini" and one.object == "model"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("no-such-model")
    assert err.value.code == "model_not_found"


def test_route_timeout_is_504(gateway: Stack, admin: Admin, tenant: Tenant, openai_sim):
    admin.model("slow-model", "sim-openai", "gpt-4o-mini")
    admin.call(
        "PUT",
        "/routes/slow-model",
        {"fallbacks": [], "retry_on": [], "attempt_timeout_s": 1, "total_timeout_s": 1},
    )
    client = tenant.client(gateway)
    eventually(lambda: "slow-model" in [m.id for m in client.models.list()])
    openai_sim.script([{"action": "hang", "seconds": 4}])
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="slow-model", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 504
    assert err.value.code == "upstream_timeout"
    headers = err.value.response.headers
    assert not any(name.startswith("x-infery") for name in headers)
    record = eventually(lambda: admin.usage_record(headers["x-request-id"]))
    assert record["status"] == 504 and record["error_code"] == "upstream_timeout"
    assert record["credits"] == "0"


@pytest.mark.parametrize(("kind", "slug"), [("xai", "grok-4"), ("openai_compatible", "llama-3-1-8b")])
def test_xai_and_openai_compatible_servers_use_the_openai_path(
    gateway: Stack, admin: Admin, tenant: Tenant, openai_sim, kind: str, slug: str
):
    admin.provider(f"sim-{kind}", kind, openai_sim.base_url, SIM_KEY)
    admin.model(slug, f"sim-{kind}", f"upstream-{slug}")
    client = tenant.client(gateway)
    eventually(lambda: slug in [m.id for m in client.models.list()])
    openai_sim.clear()
    raw = client.chat.completions.with_raw_response.create(
        model=slug, messages=[{"role": "user", "content": "hi"}], store=False, service_tier="auto"
    )
    assert_openai(json.loads(raw.http_response.content), "CreateChatCompletionResponse")
    assert raw.headers["x-model-used"] == slug and Decimal(raw.headers["x-credits-used"]) > 0
    sent = openai_sim.requests()[-1]["body"]
    assert sent["model"] == f"upstream-{slug}"
    # Parameters these servers reject and nobody relies on are dropped, not forwarded.
    assert "store" not in sent and "service_tier" not in sent
    chunks = list(
        client.chat.completions.create(model=slug, messages=[{"role": "user", "content": "hi"}], stream=True)
    )
    assert chunks[-1].model_extra["credits_used"] > 0


@pytest.mark.parametrize(
    ("slug", "call", "path"),
    [
        ("claude-sonnet-4-5", "embeddings", "/v1/embeddings"),
        ("claude-sonnet-4-5", "images", "/v1/images/generations"),
        ("gemini-2-5-flash", "images", "/v1/images/generations"),
    ],
)
def test_an_endpoint_the_provider_lacks_is_unsupported_endpoint(
    client: openai.OpenAI, admin: Admin, three_formats: dict, slug: str, call: str, path: str
):
    eventually(lambda: slug in [m.id for m in client.models.list()])
    sim = three_formats[slug]
    sim.clear()
    with pytest.raises(openai.BadRequestError) as err:
        if call == "embeddings":
            client.embeddings.create(model=slug, input="hello")
        else:
            client.images.generate(model=slug, prompt="a lighthouse")
    assert err.value.code == "unsupported_endpoint" and err.value.param == "model"
    assert err.value.body["message"] == f"This model's provider does not support {path}."
    assert sim.requests() == []  # refused before any upstream call
    record = eventually(lambda: admin.usage_record(err.value.response.headers["x-request-id"]))
    assert record["status"] == 400 and record["error_code"] == "unsupported_endpoint"
    assert record["endpoint"] == path and record["credits"] == "0"
