"""bulk_sql: many rows per round trip on SQLite and PostgreSQL, with the same answers on both
(usage ingestion's statements, and the kept responses' upsert_replacing)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from cp_support import record

from control_plane.resources import usage, usage_rollups
from control_plane.store import bulk_sql, db
from control_plane.store.tables import StoredResponse, UsageRecord, UsageRollup

RECORDS = UsageRecord.__table__  # type: ignore[attr-defined]
ROLLUPS = UsageRollup.__table__  # type: ignore[attr-defined]
RESPONSES = StoredResponse.__table__  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> sa.Engine:
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    db.migrate(url)
    engine = db.create_engine(url)
    request.addfinalizer(engine.dispose)
    return engine


def test_insert_new_returns_only_the_keys_it_inserted(engine: sa.Engine) -> None:
    rows = [usage._row(record(f"r-{i}")) for i in range(1200)]  # more than one SQLite statement carries
    with engine.begin() as connection:
        assert len(bulk_sql.insert_new(connection, RECORDS, rows[:700], "request_id")) == 700
    with engine.begin() as connection:
        inserted = bulk_sql.insert_new(connection, RECORDS, rows[500:], "request_id")
    assert sorted(inserted) == sorted(f"r-{i}" for i in range(700, 1200))
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT COUNT(*) FROM usage_records").scalar() == 1200


def test_upsert_adding_adds_the_sums_where_the_key_exists(engine: sa.Engine) -> None:
    def row(key: str, requests: int, tokens: int) -> tuple[object, ...]:
        dimensions = ("ws", key, "m", "gpt-4o", "/v1/chat/completions")
        return ("day", 0, *dimensions, "1970-01-01", requests, tokens, 0, 0, 7, 1)

    sums = usage_rollups.SUMS
    with engine.begin() as connection:
        bulk_sql.upsert_adding(connection, ROLLUPS, [row("k-1", 1, 10), row("k-2", 2, 20)], sums)
    with engine.begin() as connection:
        bulk_sql.upsert_adding(connection, ROLLUPS, [row("k-2", 3, 30), row("k-3", 4, 40)], sums)
    with engine.connect() as connection:
        stored = connection.exec_driver_sql(
            "SELECT key_id, requests, input_tokens, credits_pico, file_bytes"
            " FROM usage_rollups ORDER BY key_id"
        ).all()
    assert [tuple(r) for r in stored] == [("k-1", 1, 10, 7, 1), ("k-2", 5, 50, 14, 2), ("k-3", 4, 40, 7, 1)]


def response_row(workspace: str, response_id: str, text: bytes, expires_at: int = 2000) -> tuple[object, ...]:
    return (workspace, response_id, "gpt-4o", 1000, expires_at, b'{"t":"' + text + b'"}', b"[]")


def stored_responses(engine: sa.Engine) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT workspace_id, id, expires_at, response FROM stored_responses ORDER BY workspace_id, id"
        ).all()
    return [(w, i, e, bytes(r)) for w, i, e, r in rows]


def test_upsert_replacing_inserts_new_keys_and_replaces_existing_ones(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        bulk_sql.upsert_replacing(
            connection, RESPONSES, [response_row("ws-a", "r1", b"1"), response_row("ws-b", "r1", b"b")]
        )
    with engine.begin() as connection:
        bulk_sql.upsert_replacing(
            connection,
            RESPONSES,
            [response_row("ws-a", "r1", b"2", expires_at=3000), response_row("ws-a", "r2", b"3")],
        )
    assert stored_responses(engine) == [
        ("ws-a", "r1", 3000, b'{"t":"2"}'),
        ("ws-a", "r2", 2000, b'{"t":"3"}'),
        ("ws-b", "r1", 2000, b'{"t":"b"}'),
    ]


def test_upsert_replacing_one_row_and_none(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        bulk_sql.upsert_replacing(connection, RESPONSES, [])
        bulk_sql.upsert_replacing(connection, RESPONSES, [response_row("ws-a", "r1", b"x" * 100_000)])
    assert stored_responses(engine) == [("ws-a", "r1", 2000, b'{"t":"' + b"x" * 100_000 + b'"}')]
