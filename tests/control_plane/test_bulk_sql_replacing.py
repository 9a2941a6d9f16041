"""bulk_sql.upsert_replacing (the kept responses' upsert): new keys inserted, existing keys' other
columns replaced, keys of other workspaces untouched, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from control_plane.store import bulk_sql, db
from control_plane.store.tables import StoredResponse

RESPONSES = StoredResponse.__table__  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> sa.Engine:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    db.migrate(url)
    engine = db.create_engine(url)
    request.addfinalizer(engine.dispose)
    return engine


def row(workspace: str, response_id: str, text: bytes, expires_at: int = 2000) -> tuple[object, ...]:
    return (workspace, response_id, "gpt-4o", 1000, expires_at, b'{"t":"' + text + b'"}', b"[]")


def stored(engine: sa.Engine) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT workspace_id, id, expires_at, response FROM stored_responses ORDER BY workspace_id, id"
        ).all()
    return [(w, i, e, bytes(r)) for w, i, e, r in rows]


def test_upsert_replacing_inserts_new_keys_and_replaces_existing_ones(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        bulk_sql.upsert_replacing(connection, RESPONSES, [row("ws-a", "r1", b"1"), row("ws-b", "r1", b"b")])
    with engine.begin() as connection:
        bulk_sql.upsert_replacing(
            connection, RESPONSES, [row("ws-a", "r1", b"2", expires_at=3000), row("ws-a", "r2", b"3")]
        )
    assert stored(engine) == [
        ("ws-a", "r1", 3000, b'{"t":"2"}'),
        ("ws-a", "r2", 2000, b'{"t":"3"}'),
        ("ws-b", "r1", 2000, b'{"t":"b"}'),
    ]


def test_upsert_replacing_one_row_and_none(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        bulk_sql.upsert_replacing(connection, RESPONSES, [])
        bulk_sql.upsert_replacing(connection, RESPONSES, [row("ws-a", "r1", b"x" * 100_000)])
    assert stored(engine) == [("ws-a", "r1", 2000, b'{"t":"' + b"x" * 100_000 + b'"}')]
