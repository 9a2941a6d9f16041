"""Migrations produce exactly the models' schema, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cp_support import ADMIN_TOKEN, AUTH
from fastapi.testclient import TestClient
from sqlmodel import SQLModel

from control_plane.api import create_app
from control_plane.settings import Settings
from control_plane.store import db
from control_plane.store.changes import current_revision
from control_plane.store.snapshot import load_snapshot


def schema_differences(url: str) -> list[object]:
    engine = db.create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, SQLModel.metadata))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_migrations_match_the_models(fresh_url: str) -> None:
    db.migrate(fresh_url)
    assert schema_differences(fresh_url) == []
    db.migrate(fresh_url)  # a second start is a no-op
    engine = db.create_engine(fresh_url)
    try:
        with db.session_factory(engine)() as session:
            assert current_revision(session) == 0
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(fresh_url: str) -> None:
    db.migrate(fresh_url)
    engine = db.create_engine(fresh_url)
    try:
        with engine.begin() as connection:
            config = db.alembic_config(fresh_url)
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
    finally:
        engine.dispose()
    db.migrate(fresh_url)
    assert schema_differences(fresh_url) == []


def test_admin_api_on_postgresql(postgres_url: str) -> None:
    engine, factory = db.open_store(postgres_url)
    try:
        app = create_app(Settings(database_url=postgres_url, admin_token=ADMIN_TOKEN), factory)
        with TestClient(app, headers=AUTH) as client:
            client.post(
                "/admin/v1/providers", json={"name": "xai", "kind": "xai", "base_url": "https://api.x.ai/v1"}
            )
            assert client.post("/admin/v1/providers/xai/import-catalog").status_code == 200
            client.put("/admin/v1/routes/grok-4", json={"fallbacks": ["grok-3-mini"]})
            client.post(
                "/admin/v1/workspaces",
                json={"name": "w", "allowed_models": ["grok-4"], "budget_credits": "5"},
            )
            client.post("/admin/v1/workspaces/w/members", json={"email": "a@b.c"})
            key = client.post("/admin/v1/workspaces/w/keys", json={"name": "k", "member": "a@b.c"}).json()
            assert client.delete(f"/admin/v1/workspaces/w/keys/{key['id']}").json()["revoked_at"]
            assert client.delete("/admin/v1/models/grok-3-mini").json()["error"]["code"] == "in_use"
        with factory() as session:
            snapshot = load_snapshot(session)
        assert snapshot.revision == 7
        assert [r.slug for r in snapshot.routes] == ["grok-4"] and snapshot.api_keys == ()
        assert snapshot.workspaces[0].budget_credits == "5"
    finally:
        engine.dispose()
