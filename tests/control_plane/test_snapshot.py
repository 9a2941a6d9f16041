"""The xDS snapshot and the revision/notification contract the xDS server relies on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cp_support import add_provider
from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

from control_plane.store import changes
from control_plane.store.snapshot import cluster_name, load_snapshot, split_base_url
from control_plane.store.tables import Provider


@pytest.fixture
def notifications() -> Iterator[list[int]]:
    seen: list[int] = []
    unsubscribe = changes.subscribe(lambda: seen.append(1))
    yield seen
    unsubscribe()


def revision(client: TestClient) -> int:
    return int(client.get("/healthz").json()["revision"])


def test_every_change_bumps_the_revision_once_and_notifies(
    client: TestClient, notifications: list[int]
) -> None:
    add_provider(client)
    assert revision(client) == 1 and len(notifications) == 1
    client.post("/admin/v1/models", json={"slug": "gpt-4o", "provider": "openai"})
    client.put("/admin/v1/routes/gpt-4o", json={"retry_on": ["5xx"]})
    assert revision(client) == 3 and len(notifications) == 3

    # Failed and no-op calls change nothing.
    client.post("/admin/v1/providers", json={"name": "openai", "kind": "openai", "base_url": "http://x"})
    client.put("/admin/v1/routes/gpt-4o", json={"retry_on": ["5xx"]})
    client.put("/admin/v1/providers/openai", json={"kind": "openai"})
    assert revision(client) == 3 and len(notifications) == 3


def test_a_failing_subscriber_does_not_fail_the_change(client: TestClient) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    unsubscribe = changes.subscribe(broken)
    try:
        assert (
            client.post(
                "/admin/v1/providers", json={"name": "p", "kind": "xai", "base_url": "https://api.x.ai/v1"}
            ).status_code
            == 201
        )
    finally:
        unsubscribe()


def test_snapshot_fills_every_field(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    add_provider(client)
    add_provider(
        client, name="Local.LLM", kind="openai_compatible", base_url="http://127.0.0.1:8000/", api_key=None
    )
    client.post("/admin/v1/models", json={"slug": "gpt-4o", "provider": "openai"})
    client.post(
        "/admin/v1/models",
        json={
            "slug": "llama",
            "provider": "Local.LLM",
            "upstream_model": "meta/llama",
            "prices": {"per_mchar": "15"},
        },
    )
    client.put(
        "/admin/v1/routes/gpt-4o",
        json={"fallbacks": ["llama"], "attempt_timeout_s": 2.5, "total_timeout_s": 5},
    )
    workspace = client.post(
        "/admin/v1/workspaces",
        json={"name": "acme", "tpm": 1000, "price_multiplier": "1.5", "allowed_models": ["gpt-4o"]},
    ).json()
    member = client.post("/admin/v1/workspaces/acme/members", json={"email": "a@b.c"}).json()
    key = client.post("/admin/v1/workspaces/acme/keys", json={"name": "k", "member": "a@b.c"}).json()

    with session_factory() as session:
        snapshot = load_snapshot(session)
    assert snapshot.revision == revision(client)
    openai, local = sorted(snapshot.providers, key=lambda p: p.name != "openai")
    assert (openai.cluster, openai.base_path, openai.host, openai.api_key) == (
        "provider_openai",
        "/v1",
        "api.openai.com",
        "sk-secret",
    )
    assert local.cluster.startswith("provider_local_llm_") and local.cluster == cluster_name("Local.LLM")
    assert (local.base_path, local.host, local.api_key, local.kind) == (
        "",
        "127.0.0.1:8000",
        "",
        "openai_compatible",
    )

    models = {m.slug: m for m in snapshot.models}
    assert models["gpt-4o"].prices.input_per_mtok == "2.50" and models["gpt-4o"].prices.per_image == ""
    assert models["llama"].prices.per_mchar == "15" and models["llama"].upstream_model == "meta/llama"
    assert models["llama"].created > 1_700_000_000 and list(models["gpt-4o"].capabilities)

    (route,) = snapshot.routes
    assert (list(route.fallbacks), route.attempt_timeout_s, route.total_timeout_s) == (["llama"], 2.5, 5.0)
    assert list(route.retry_on) == ["5xx", "429", "reset", "connect_failure", "timeout"]

    (ws,) = snapshot.workspaces
    assert ws.id == workspace["id"] and not ws.HasField("rpm") and ws.HasField("tpm") and ws.tpm == 1000
    assert (ws.price_multiplier, ws.budget_credits, ws.budget_period) == ("1.5", "", "month")
    assert list(ws.allowed_models) == ["gpt-4o"]

    (api_key,) = snapshot.api_keys
    assert (api_key.id, api_key.workspace_id, api_key.member_id, api_key.prefix) == (
        key["id"],
        workspace["id"],
        member["id"],
        key["prefix"],
    )


def test_a_long_lived_session_sees_later_changes(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    add_provider(client)
    with session_factory() as session:
        held = session.get(Provider, "openai")  # an ORM row kept alive in the identity map
        assert load_snapshot(session).providers[0].base_url == "https://api.openai.com/v1"
        client.put(
            "/admin/v1/providers/openai",
            json={"base_url": "https://proxy.example.com/v1", "api_key": "sk-proxy"},
        )
        snapshot = load_snapshot(session)
        assert snapshot.providers[0].base_url == "https://proxy.example.com/v1"
        assert snapshot.providers[0].host == "proxy.example.com"
        assert changes.current_revision(session) == snapshot.revision == 2
        assert held is not None


@pytest.mark.parametrize(
    ("name", "cluster"),
    [("openai", "provider_openai"), ("my_local", "provider_my_local")],
)
def test_cluster_names_are_identity_when_already_safe(name: str, cluster: str) -> None:
    assert cluster_name(name) == cluster


def test_cluster_names_never_collide() -> None:
    names = ["a-b", "a_b", "A_B", "a.b"]
    clusters = [cluster_name(n) for n in names]
    assert len(set(clusters)) == len(names)
    assert all(c.replace("_", "").isalnum() and c == c.lower() for c in clusters)


def test_split_base_url() -> None:
    assert split_base_url("https://api.anthropic.com") == ("api.anthropic.com", "")
    assert split_base_url("http://[::1]:8080/v1/") == ("[::1]:8080", "/v1")
