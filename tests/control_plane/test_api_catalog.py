"""Admin API: providers, models, routes, auth and the error envelope."""

from __future__ import annotations

import pytest
from cp_support import OPENAI, add_provider, assert_error
from fastapi.testclient import TestClient

from control_plane.catalog import catalog


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/v1/providers"),
        ("POST", "/admin/v1/providers"),
        ("GET", "/admin/v1/models/gpt-4o"),
        ("PUT", "/admin/v1/routes/gpt-4o"),
        ("DELETE", "/admin/v1/workspaces/x"),
        ("POST", "/admin/v1/workspaces/x/keys"),
        ("GET", "/admin/v1/usage"),
        ("GET", "/admin/v1/usage/requests/r1"),
    ],
)
@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic dGVzdC1hZG1pbi10b2tlbg==", "Bearer "])
def test_every_admin_route_requires_the_token(
    client: TestClient, method: str, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    client.headers.pop("Authorization")
    response = client.request(method, path, headers=headers, json={})
    assert_error(response, 401, "invalid_admin_token")
    # OpenAI's type for a bad key, the data plane's too (infery_proto.wire; it was Anthropic's
    # "authentication_error" before the two sides shared one table).
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_healthz_needs_no_token_and_reports_the_revision(client: TestClient) -> None:
    client.headers.pop("Authorization")
    assert client.get("/healthz").json() == {"status": "ok", "revision": 0}
    assert client.get("/docs").status_code == 200
    assert "/admin/v1/providers" in client.get("/openapi.json").json()["paths"]


def test_provider_crud_never_returns_the_api_key(client: TestClient) -> None:
    created = add_provider(client, base_url="https://api.openai.com/v1/")
    assert created == {
        "name": "openai",
        "kind": "openai",
        "base_url": "https://api.openai.com/v1",
        "has_api_key": True,
    }
    assert client.get("/admin/v1/providers/openai").json() == created
    assert client.get("/admin/v1/providers").json() == {"data": [created]}

    # PUT without api_key keeps it (a new base_url needs the key again:
    # test_provider_credentials.py); api_key null removes it.
    updated = client.put("/admin/v1/providers/openai", json={"kind": "openai"}).json()
    assert updated["base_url"] == "https://api.openai.com/v1" and updated["has_api_key"] is True
    cleared = client.put("/admin/v1/providers/openai", json={"api_key": None}).json()
    assert cleared["has_api_key"] is False
    client.put("/admin/v1/providers/openai", json={"api_key": "sk-new"})
    for response in (client.get("/admin/v1/providers"), client.get("/admin/v1/providers/openai")):
        assert "sk-" not in response.text

    assert client.delete("/admin/v1/providers/openai").status_code == 204
    assert_error(client.get("/admin/v1/providers/openai"), 404, "not_found")


def test_provider_validation_errors_use_the_envelope(client: TestClient) -> None:
    add_provider(client)
    assert_error(client.post("/admin/v1/providers", json=OPENAI), 409, "already_exists", "name")
    assert_error(
        client.post("/admin/v1/providers", json=OPENAI | {"name": "x", "kind": "azure"}),
        422,
        "invalid_request",
        "kind",
    )
    for bad_url in ("ftp://example.com", "not a url", "https://user:pw@example.com", "https://h/v1?x=1"):
        assert_error(
            client.post("/admin/v1/providers", json=OPENAI | {"name": "x", "base_url": bad_url}),
            422,
            "invalid_request",
            "base_url",
        )
    assert_error(client.post("/admin/v1/providers", json={"kind": "openai"}), 422, "invalid_request", "name")
    assert_error(
        client.post("/admin/v1/providers", json=OPENAI | {"name": "a/b"}), 422, "invalid_request", "name"
    )
    bad_json = client.post("/admin/v1/providers", content=b"{", headers={"content-type": "application/json"})
    assert_error(bad_json, 400, "invalid_json")
    assert_error(client.put("/admin/v1/providers/nope", json={}), 404, "not_found")
    assert_error(client.get("/admin/v1/no-such-thing"), 404, "not_found")


def test_model_from_catalog_and_explicit(client: TestClient) -> None:
    add_provider(client)
    response = client.post("/admin/v1/models", json={"slug": "gpt-4o-mini", "provider": "openai"})
    assert response.status_code == 201, response.text
    model = response.json()
    entry = catalog()["gpt-4o-mini"]
    assert model["upstream_model"] == entry.upstream_model
    assert model["prices"] == {
        "input_per_mtok": "0.15",
        "cached_input_per_mtok": "0.075",
        "output_per_mtok": "0.60",
        "per_image": None,
        "per_audio_second": None,
        "per_mchar": None,
    }
    assert model["capabilities"] == list(entry.capabilities)
    assert isinstance(model["created"], int) and model["created"] > 1_700_000_000

    explicit = {
        "slug": "my-model",
        "provider": "openai",
        "upstream_model": "ft:gpt-4o:acme",
        "prices": {"input_per_mtok": "1.000000001", "output_per_mtok": "3E-1", "per_image": 2},
        "capabilities": ["chat"],
    }
    created = client.post("/admin/v1/models", json=explicit).json()
    assert created["prices"]["input_per_mtok"] == "1.000000001"  # exact, as written
    assert created["prices"]["output_per_mtok"] == "0.3"  # no exponent on the way out
    assert created["prices"]["per_image"] == "2"
    assert client.get("/admin/v1/models/my-model").json() == created

    updated = client.put("/admin/v1/models/my-model", json={"prices": {"output_per_mtok": "4"}}).json()
    assert updated["prices"]["output_per_mtok"] == "4" and updated["prices"]["input_per_mtok"] is None
    assert updated["upstream_model"] == "ft:gpt-4o:acme"
    assert [m["slug"] for m in client.get("/admin/v1/models").json()["data"]] == ["gpt-4o-mini", "my-model"]
    assert client.delete("/admin/v1/models/my-model").status_code == 204
    assert_error(client.get("/admin/v1/models/my-model"), 404, "not_found")


def test_model_validation(client: TestClient) -> None:
    add_provider(client)
    assert_error(
        client.post("/admin/v1/models", json={"slug": "gpt-4o", "provider": "nope"}),
        400,
        "invalid_request",
        "provider",
    )
    assert_error(
        client.post("/admin/v1/models", json={"slug": "unknown-model", "provider": "openai"}),
        400,
        "invalid_request",
        "upstream_model",
    )
    floats = {"slug": "x", "provider": "openai", "upstream_model": "x", "prices": {"input_per_mtok": 0.1}}
    assert_error(
        client.post("/admin/v1/models", json=floats), 422, "invalid_request", "prices.input_per_mtok"
    )
    negative = floats | {"prices": {"output_per_mtok": "-1"}}
    assert_error(
        client.post("/admin/v1/models", json=negative), 422, "invalid_request", "prices.output_per_mtok"
    )
    bad_cap = {"slug": "x", "provider": "openai", "upstream_model": "x", "capabilities": ["telepathy"]}
    assert_error(client.post("/admin/v1/models", json=bad_cap), 422, "invalid_request", "capabilities.0")
    client.post("/admin/v1/models", json={"slug": "gpt-4o", "provider": "openai"})
    assert_error(
        client.post("/admin/v1/models", json={"slug": "gpt-4o", "provider": "openai"}), 409, "already_exists"
    )
    # The provider serves a model now: deleting it would orphan the model.
    assert_error(client.delete("/admin/v1/providers/openai"), 409, "in_use")


def test_import_catalog_is_idempotent(client: TestClient) -> None:
    add_provider(client)
    first = client.post("/admin/v1/providers/openai/import-catalog")
    expected = sorted(slug for slug, entry in catalog().items() if entry.kind == "openai")
    assert sorted(m["slug"] for m in first.json()["data"]) == expected
    revision = client.get("/healthz").json()["revision"]
    second = client.post("/admin/v1/providers/openai/import-catalog")
    assert second.json() == {"data": []}
    assert client.get("/healthz").json()["revision"] == revision
    assert_error(client.post("/admin/v1/providers/nope/import-catalog"), 404, "not_found")


def test_routes(client: TestClient) -> None:
    add_provider(client)
    client.post("/admin/v1/providers/openai/import-catalog")
    body = {"fallbacks": ["gpt-4o-mini", "gpt-4.1"], "retry_on": ["5xx", "429"], "attempt_timeout_s": 10}
    route = client.put("/admin/v1/routes/gpt-4o", json=body)
    assert route.status_code == 200, route.text
    assert route.json() == {
        "slug": "gpt-4o",
        "fallbacks": ["gpt-4o-mini", "gpt-4.1"],
        "retry_on": ["5xx", "429"],
        "attempt_timeout_s": 10.0,
        "total_timeout_s": 300.0,
    }
    # A later PUT changing one field keeps the others.
    again = client.put("/admin/v1/routes/gpt-4o", json={"total_timeout_s": 30}).json()
    assert again["fallbacks"] == ["gpt-4o-mini", "gpt-4.1"] and again["total_timeout_s"] == 30.0
    assert client.get("/admin/v1/routes/gpt-4o").json() == again
    assert client.get("/admin/v1/routes").json() == {"data": [again]}

    assert_error(
        client.put("/admin/v1/routes/gpt-4o", json={"fallbacks": ["gpt-4o"]}),
        400,
        "invalid_request",
        "fallbacks",
    )
    assert_error(
        client.put("/admin/v1/routes/gpt-4o", json={"fallbacks": ["nope"]}),
        400,
        "invalid_request",
        "fallbacks",
    )
    assert_error(
        client.put("/admin/v1/routes/gpt-4o", json={"retry_on": ["4xx"]}),
        422,
        "invalid_request",
        "retry_on.0",
    )
    assert_error(client.put("/admin/v1/routes/gpt-4o", json={"attempt_timeout_s": 0}), 422, "invalid_request")
    assert_error(
        client.put("/admin/v1/routes/gpt-4o", json={"attempt_timeout_s": 60}),
        400,
        "invalid_request",
        "attempt_timeout_s",
    )
    assert_error(client.put("/admin/v1/routes/nope", json={}), 404, "not_found")
    # A model used as a fallback cannot be deleted; its own route goes with it.
    assert_error(client.delete("/admin/v1/models/gpt-4o-mini"), 409, "in_use")
    assert client.delete("/admin/v1/models/gpt-4o").status_code == 204
    assert_error(client.get("/admin/v1/routes/gpt-4o"), 404, "not_found")
    assert_error(client.delete("/admin/v1/routes/gpt-4o"), 404, "not_found")
