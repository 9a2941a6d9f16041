"""Inputs that would otherwise crash, wedge or leak: each is refused or absorbed, never a 500."""

from __future__ import annotations

import time
from typing import Any

from cp_support import AUTH, add_provider, assert_error, record, store
from fastapi.testclient import TestClient

from control_plane.store.snapshot import load_snapshot
from control_plane.xds.envoy_config import ListenerSettings
from control_plane.xds.publisher import build_resources


def _model(client: TestClient, slug: str) -> None:
    body = {"slug": slug, "provider": "openai", "upstream_model": slug, "prices": {"input_per_mtok": "1"}}
    assert client.post("/admin/v1/models", json=body, headers=AUTH).status_code == 201


def test_route_timeouts_below_a_millisecond_are_refused_and_others_publish(
    client: TestClient, session_factory: Any
):
    add_provider(client)
    _model(client, "a")
    _model(client, "b")
    too_small = {"fallbacks": ["b"], "attempt_timeout_s": 0.00001, "total_timeout_s": 0.00001}
    assert_error(client.put("/admin/v1/routes/a", json=too_small, headers=AUTH), 422, "invalid_request")
    odd = {"fallbacks": ["b"], "attempt_timeout_s": 0.0015, "total_timeout_s": 3599.99999999999}
    assert client.put("/admin/v1/routes/a", json=odd, headers=AUTH).status_code == 200
    with session_factory() as session:
        build_resources(load_snapshot(session), ListenerSettings())  # the config still publishes


def test_huge_decimal_exponents_are_refused_quickly(client: TestClient):
    started = time.monotonic()
    response = client.post(
        "/admin/v1/workspaces", json={"name": "w", "price_multiplier": "1e999999999"}, headers=AUTH
    )
    assert_error(response, 422, "invalid_request", "price_multiplier")
    assert time.monotonic() - started < 1.0


def test_limits_beyond_the_store_are_refused(client: TestClient):
    response = client.post("/admin/v1/workspaces", json={"name": "w", "rpm": 2**63}, headers=AUTH)
    assert_error(response, 422, "invalid_request", "rpm")


def test_overlong_base_url_is_refused_not_a_500(client: TestClient):
    response = client.post(
        "/admin/v1/providers",
        json={
            "name": "p",
            "kind": "openai",
            "base_url": "https://x.example/" + "a" * 2100,
            "api_key": "sk-secret",
        },
        headers=AUTH,
    )
    assert_error(response, 422, "invalid_request", "base_url")


def test_far_future_usage_bound_is_a_400(client: TestClient):
    assert_error(client.get("/admin/v1/usage?to=9999-12-31", headers=AUTH), 400, "invalid_request", "to")


def test_absurd_credits_do_not_block_the_batch(session_factory: Any):
    assert store(session_factory, [record("huge", credits="1E+16"), record("ok")]) == (2, 0)
