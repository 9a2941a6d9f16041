"""Admin API: workspaces, members, keys (shown once, stored hashed, revocable)."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from pathlib import Path

from cp_support import add_provider, assert_error
from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, select

from control_plane.store.snapshot import load_snapshot
from control_plane.store.tables import ApiKey
from tests.control_plane.files.harness import files_service


def setup_models(client: TestClient) -> None:
    add_provider(client)
    client.post("/admin/v1/models", json={"slug": "gpt-4o", "provider": "openai"})
    client.post("/admin/v1/models", json={"slug": "gpt-4o-mini", "provider": "openai"})


def test_workspace_crud(client: TestClient) -> None:
    setup_models(client)
    body = {
        "name": "acme",
        "rpm": 60,
        "tpm": None,
        "budget_credits": "12.50",
        "budget_period": "day",
        "price_multiplier": "1.15",
        "allowed_models": ["gpt-4o"],
        "share_idempotent_replays": True,
        "batch_rpm": 30,
        "batch_tpm": None,
    }
    response = client.post("/admin/v1/workspaces", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created.pop("id")
    assert created == body

    defaults = client.post("/admin/v1/workspaces", json={"name": "bare"}).json()
    assert defaults["rpm"] is None and defaults["budget_credits"] is None
    assert defaults["budget_period"] == "month" and defaults["price_multiplier"] == "1"
    assert defaults["allowed_models"] == []
    assert defaults["share_idempotent_replays"] is False  # replays stay with the member by default

    updated = client.put("/admin/v1/workspaces/acme", json={"rpm": None, "allowed_models": []}).json()
    assert updated["rpm"] is None and updated["allowed_models"] == [] and updated["budget_credits"] == "12.50"
    renamed = client.put("/admin/v1/workspaces/acme", json={"name": "acme-2"}).json()
    assert renamed["id"] == response.json()["id"]
    assert client.get("/admin/v1/workspaces/acme-2").json() == renamed
    assert [w["name"] for w in client.get("/admin/v1/workspaces").json()["data"]] == ["acme-2", "bare"]
    assert_error(client.put("/admin/v1/workspaces/acme-2", json={"name": "bare"}), 409, "already_exists")
    assert client.delete("/admin/v1/workspaces/acme-2").status_code == 204
    assert_error(client.get("/admin/v1/workspaces/acme-2"), 404, "not_found")


def test_workspace_validation(client: TestClient) -> None:
    setup_models(client)
    client.post("/admin/v1/workspaces", json={"name": "acme"})
    assert_error(client.post("/admin/v1/workspaces", json={"name": "acme"}), 409, "already_exists", "name")
    cases: list[tuple[dict[str, object], str]] = [
        ({"budget_period": "week"}, "budget_period"),
        ({"price_multiplier": "0"}, "price_multiplier"),
        ({"price_multiplier": "-2"}, "price_multiplier"),
        ({"price_multiplier": "abc"}, "price_multiplier"),
        ({"budget_credits": 1.5}, "budget_credits"),
        ({"budget_credits": "NaN"}, "budget_credits"),
        ({"rpm": -1}, "rpm"),
        ({"tpm": "many"}, "tpm"),
    ]
    for extra, param in cases:
        assert_error(
            client.post("/admin/v1/workspaces", json={"name": "w", **extra}), 422, "invalid_request", param
        )
    assert_error(
        client.post("/admin/v1/workspaces", json={"name": "w", "allowed_models": ["nope"]}),
        400,
        "invalid_request",
        "allowed_models",
    )
    # An allowed model cannot be deleted from under a workspace.
    client.put("/admin/v1/workspaces/acme", json={"allowed_models": ["gpt-4o"]})
    assert_error(client.delete("/admin/v1/models/gpt-4o"), 409, "in_use")


def test_members(client: TestClient) -> None:
    client.post("/admin/v1/workspaces", json={"name": "acme"})
    response = client.post(
        "/admin/v1/workspaces/acme/members", json={"email": "Ada@Example.com", "role": "owner"}
    )
    assert response.status_code == 201, response.text
    member = response.json()
    assert set(member) == {"id", "email", "role"}
    assert member["email"] == "ada@example.com" and member["role"] == "owner"
    assert_error(
        client.post("/admin/v1/workspaces/acme/members", json={"email": "ada@example.com"}),
        409,
        "already_exists",
    )
    assert_error(
        client.post("/admin/v1/workspaces/acme/members", json={"email": "nope"}),
        422,
        "invalid_request",
        "email",
    )
    assert_error(
        client.post("/admin/v1/workspaces/acme/members", json={"email": "b@x.io", "role": "god"}),
        422,
        "invalid_request",
        "role",
    )
    assert_error(client.post("/admin/v1/workspaces/none/members", json={"email": "b@x.io"}), 404, "not_found")
    assert client.get("/admin/v1/workspaces/acme/members").json() == {"data": [member]}
    assert client.delete("/admin/v1/workspaces/acme/members/ada@example.com").status_code == 204
    assert client.get("/admin/v1/workspaces/acme/members").json() == {"data": []}


def test_key_is_shown_once_stored_hashed_and_revocable(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    client.post("/admin/v1/workspaces", json={"name": "acme"})
    member = client.post("/admin/v1/workspaces/acme/members", json={"email": "ada@example.com"}).json()
    response = client.post("/admin/v1/workspaces/acme/keys", json={"name": "ci", "member": "ada@example.com"})
    assert response.status_code == 201, response.text
    created = response.json()
    secret = created["key"]
    assert secret.startswith("inf_") and len(secret) > 40
    assert created["prefix"] == secret[:12]
    assert created["member"] == member["id"] and created["name"] == "ci"
    by_id = client.post("/admin/v1/workspaces/acme/keys", json={"name": "ci2", "member": member["id"]}).json()
    assert by_id["key"] != secret

    # The secret never appears again: not in lists, not in the database.
    listed = client.get("/admin/v1/workspaces/acme/keys")
    assert secret not in listed.text and "key" not in listed.json()["data"][0]
    assert secret[12:] not in client.get(f"/admin/v1/workspaces/acme/keys/{created['id']}").text
    with session_factory() as session:
        row = session.exec(select(ApiKey).where(ApiKey.id == created["id"])).one()
        assert row.key_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in repr(row.model_dump())
        snapshot = load_snapshot(session)
    assert {k.key_hash for k in snapshot.api_keys} == {
        hashlib.sha256(secret.encode()).hexdigest(),
        hashlib.sha256(by_id["key"].encode()).hexdigest(),
    }

    revoked = client.delete(f"/admin/v1/workspaces/acme/keys/{created['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    again = client.delete(f"/admin/v1/workspaces/acme/keys/{created['id']}").json()
    assert again["revoked_at"] == revoked.json()["revoked_at"]
    with session_factory() as session:
        assert [k.id for k in load_snapshot(session).api_keys] == [by_id["id"]]
    listed_after = {k["id"]: k for k in client.get("/admin/v1/workspaces/acme/keys").json()["data"]}
    assert listed_after[created["id"]]["revoked_at"] is not None

    assert_error(
        client.post("/admin/v1/workspaces/acme/keys", json={"name": "x", "member": "who@x.io"}),
        400,
        "invalid_request",
        "member",
    )
    assert_error(
        client.post("/admin/v1/workspaces/acme/keys", json={"member": "ada@example.com"}),
        422,
        "invalid_request",
        "name",
    )
    assert_error(client.delete("/admin/v1/workspaces/acme/keys/nope"), 404, "not_found")
    client.post("/admin/v1/workspaces", json={"name": "other"})
    assert_error(client.delete(f"/admin/v1/workspaces/other/keys/{by_id['id']}"), 404, "not_found")


def test_deleting_a_workspace_removes_its_keys_from_the_data_plane(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    client.post("/admin/v1/workspaces", json={"name": "acme"})
    client.post("/admin/v1/workspaces/acme/members", json={"email": "ada@example.com"})
    client.post("/admin/v1/workspaces/acme/keys", json={"name": "k", "member": "ada@example.com"})
    assert client.delete("/admin/v1/workspaces/acme").status_code == 204
    with session_factory() as session:
        snapshot = load_snapshot(session)
    assert snapshot.workspaces == () and snapshot.api_keys == ()


def test_a_workspaces_files_are_listed_newest_first_by_page(
    client: TestClient, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """What the dashboard shows: the files uploaded through the files service (its real app, on the
    same store), for this workspace only, expired ones gone, metadata only."""
    ours = client.post("/admin/v1/workspaces", json={"name": "acme"}).json()["id"]
    theirs = client.post("/admin/v1/workspaces", json={"name": "other"}).json()["id"]
    with files_service(tmp_path / "files", session_factory) as files:
        files.clock.now = time.time() - 100  # uploaded 100 s ago
        first = files.upload(b"a" * 10, workspace=ours).json()
        files.clock.now += 1
        expired = files.upload(
            b"x",
            workspace=ours,
            **{"expires_after[anchor]": "created_at"},
            **{"expires_after[seconds]": "10"},
        )
        assert expired.status_code == 200
        files.clock.now += 1
        second = files.upload(b"b" * 20, workspace=ours).json()
        files.upload(b"not acme's", workspace=theirs)

    listed = client.get("/admin/v1/workspaces/acme/files").json()
    assert [f["id"] for f in listed["data"]] == [second["id"], first["id"]] and listed["has_more"] is False
    shown = listed["data"][0]
    assert shown == {
        "id": second["id"],
        "filename": "notes.txt",
        "purpose": "user_data",
        "bytes": 20,
        "created_at": shown["created_at"],
        "expires_at": None,
        "member": "member-1",
        "key_id": "key-1",
    }
    assert datetime.fromisoformat(shown["created_at"]).timestamp() == second["created_at"]
    page = client.get("/admin/v1/workspaces/acme/files", params={"limit": 1}).json()
    assert [f["id"] for f in page["data"]] == [second["id"]] and page["has_more"] is True
    rest = client.get("/admin/v1/workspaces/acme/files", params={"limit": 1, "after": second["id"]}).json()
    assert [f["id"] for f in rest["data"]] == [first["id"]] and rest["has_more"] is False
    assert [f["bytes"] for f in client.get("/admin/v1/workspaces/other/files").json()["data"]] == [10]
    assert_error(client.get("/admin/v1/workspaces/nobody/files"), 404, "not_found")
    assert client.get("/admin/v1/workspaces/acme/files", params={"limit": 0}).status_code == 422
