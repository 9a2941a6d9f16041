"""The control plane's request log: one line per admin request, its id returned, nothing secret."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from cp_support import ADMIN_TOKEN
from fastapi.testclient import TestClient

PROVIDER_KEY = "sk-provider-secret-123456"
MEMBER = {"email": "a@acme.example"}
KEY = {"name": "ci", "member": "a@acme.example"}


def _lines(caplog: pytest.LogCaptureFixture) -> list[Any]:
    return [r for r in caplog.records if r.name == "infery.admin_requests"]


def test_one_line_per_request_with_its_id_route_template_and_workspace(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="infery.admin_requests"):
        created = client.post("/admin/v1/workspaces", json={"name": "acme"})
        member = client.post("/admin/v1/workspaces/acme/members", json=MEMBER)
        key = client.post("/admin/v1/workspaces/acme/keys", json=KEY)
        usage = client.get("/admin/v1/usage", params={"workspace": "acme", "key": key.json()["id"]})
        missing = client.get("/admin/v1/workspaces/nobody")
    responses = (created, member, key, usage, missing)
    assert [r.status_code for r in responses] == [201, 201, 201, 200, 404]
    lines = _lines(caplog)
    assert [(r.method, r.route, r.status) for r in lines] == [
        ("POST", "/admin/v1/workspaces", 201),
        ("POST", "/admin/v1/workspaces/{name}/members", 201),
        ("POST", "/admin/v1/workspaces/{name}/keys", 201),
        ("GET", "/admin/v1/usage", 200),
        ("GET", "/admin/v1/workspaces/{name}", 404),
    ]
    assert [getattr(r, "workspace", None) for r in lines] == [None, "acme", "acme", "acme", "nobody"]
    assert [r.request_id for r in lines] == [r.headers["x-request-id"] for r in responses]
    assert len({r.request_id for r in lines}) == 5 and all(r.duration_ms >= 0 for r in lines)


def test_no_token_key_or_body_reaches_the_log(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        client.post("/admin/v1/workspaces", json={"name": "acme"})
        client.post("/admin/v1/workspaces/acme/members", json=MEMBER)
        secret = client.post("/admin/v1/workspaces/acme/keys", json=KEY).json()["key"]
        body = {"name": "p", "kind": "openai", "base_url": "https://p.example", "api_key": PROVIDER_KEY}
        assert client.post("/admin/v1/providers", json=body).status_code == 201
        # A key sent as the admin token: refused, and logged without it.
        refused = client.get("/admin/v1/providers", headers={"authorization": f"Bearer {secret}"})
    assert refused.status_code == 401 and _lines(caplog)[-1].status == 401
    text = caplog.text + "".join(str(vars(r)) for r in caplog.records)
    for value in (ADMIN_TOKEN, secret, PROVIDER_KEY):
        assert value not in text


def test_probes_and_scrapes_are_logged_at_debug_only(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="infery.admin_requests"):
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200
    assert [(r.route, r.levelno) for r in _lines(caplog)] == [
        ("/healthz", logging.DEBUG),
        ("/readyz", logging.DEBUG),
        ("/metrics", logging.DEBUG),
    ]
