"""Usage storage (exactly once per request id) and the analytics API, with exact decimals."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from cp_support import THREE, assert_error, record, store
from fastapi.testclient import TestClient
from infery_proto.v1 import usage_pb2
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

from control_plane.resources import usage
from control_plane.store import db


def test_group_by_sums_exactly(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    assert store(session_factory, THREE) == (3, 0)

    def rows(**params: str) -> list[dict[str, Any]]:
        response = client.get("/admin/v1/usage", params=params)
        assert response.status_code == 200, response.text
        return list(response.json()["rows"])

    by_key = rows(group_by="key")
    assert by_key == [
        {
            "group": "k-1",
            "requests": 2,
            "input_tokens": 107,
            "cached_input_tokens": 20,
            "output_tokens": 53,
            "credits": "0.3",
            "file_bytes": 0,
        },
        {
            "group": "k-2",
            "requests": 1,
            "input_tokens": 100,
            "cached_input_tokens": 20,
            "output_tokens": 50,
            "credits": "0.000000000001",
            "file_bytes": 0,
        },
    ]
    assert [(r["group"], r["credits"]) for r in rows(group_by="model")] == [
        ("claude-sonnet-4-5", "0.000000000001"),
        ("gpt-4o", "0.3"),
    ]
    assert [(r["group"], r["requests"]) for r in rows(group_by="member")] == [("m-1", 2), ("m-2", 1)]
    assert [(r["group"], r["credits"]) for r in rows(group_by="day")] == [
        ("2025-03-01", "0.3"),
        ("2025-03-02", "0.000000000001"),
    ]
    (total,) = rows()
    assert total["group"] == "total" and total["requests"] == 3
    assert Decimal(total["credits"]) == Decimal("0.300000000001")


def test_filters(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    store(session_factory, THREE)

    def total(**params: str) -> tuple[int, str]:
        rows = client.get("/admin/v1/usage", params=params).json()["rows"]
        return (rows[0]["requests"], rows[0]["credits"]) if rows else (0, "0")

    assert total(key="k-2") == (1, "0.000000000001")
    assert total(model="gpt-4o") == (2, "0.3")
    assert total(member="m-1") == (2, "0.3")
    assert total(workspace="ws-1") == (3, "0.300000000001")
    assert total(workspace="other") == (0, "0")
    assert total(**{"from": "2025-03-02"}) == (1, "0.000000000001")
    assert total(to="2025-03-01") == (2, "0.3")  # a date as `to` includes that day
    assert total(**{"from": "2025-03-01T10:00:00Z", "to": "2025-03-01T10:00:00.001Z"}) == (2, "0.3")
    assert total(**{"from": "2025-03-01T10:00:01+00:00"}) == (1, "0.000000000001")
    assert_error(client.get("/admin/v1/usage", params={"from": "yesterday"}), 400, "invalid_request", "from")
    assert_error(
        client.get("/admin/v1/usage", params={"group_by": "week"}), 422, "invalid_request", "group_by"
    )


def test_filters_resolve_workspace_names_and_member_emails(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    workspace = client.post("/admin/v1/workspaces", json={"name": "acme"}).json()
    member = client.post("/admin/v1/workspaces/acme/members", json={"email": "ada@example.com"}).json()
    store(
        session_factory,
        [
            record("a", workspace_id=workspace["id"], member_id=member["id"], credits="1.5"),
            record("b", workspace_id=workspace["id"], member_id="someone-else", credits="2"),
            record("c", credits="4"),
        ],
    )
    rows = client.get("/admin/v1/usage", params={"workspace": "acme", "group_by": "member"}).json()["rows"]
    assert {r["group"]: r["credits"] for r in rows} == {member["id"]: "1.5", "someone-else": "2"}
    by_email = client.get("/admin/v1/usage", params={"member": "Ada@example.com"}).json()["rows"]
    assert by_email[0]["requests"] == 1 and by_email[0]["credits"] == "1.5"


def test_single_record(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    store(session_factory, [THREE[2]])
    response = client.get("/admin/v1/usage/requests/r3")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["credits"] == "0.000000000001"
    assert body["started_at"].startswith("2025-03-02T23:59:59")
    assert body["fallback_from"] == "gpt-4o" and body["model_used"] == "claude-sonnet-4-5"
    assert body["status"] == 200 and body["latency_ms"] == 12.5 and body["idempotent_replay"] is False
    for field in usage_pb2.UsageRecord.DESCRIPTOR.fields:
        assert field.name in body or field.name == "started_at_ms"
    assert_error(client.get("/admin/v1/usage/requests/nope"), 404, "not_found")


def test_a_requests_extra_choices_are_listed_by_their_parent(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    """An emulated n's extra choices each have a record naming the client's request; the
    client's request lists them, oldest first (an unknown request: 404, as for one record)."""
    store(
        session_factory,
        [
            record("client", credits="1"),
            record("choice-2", parent_request_id="client", credits="2", started_at_ms=2_000),
            record("choice-1", parent_request_id="client", credits="3", started_at_ms=1_000),
            record("other", parent_request_id="someone-else", credits="4"),
        ],
    )
    response = client.get("/admin/v1/usage/requests/client/choices")
    assert response.status_code == 200, response.text
    assert [(r["request_id"], r["credits"]) for r in response.json()["data"]] == [
        ("choice-1", "3"),
        ("choice-2", "2"),
    ]
    assert client.get("/admin/v1/usage/requests/choice-1/choices").json()["data"] == []
    assert_error(client.get("/admin/v1/usage/requests/nope/choices"), 404, "not_found")


def test_credits_beyond_twelve_decimals_keep_the_exact_string(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    store(session_factory, [record("x", credits="0.0000000000004"), record("y", credits="not-a-number")])
    assert client.get("/admin/v1/usage/requests/x").json()["credits"] == "0.0000000000004"
    # Rounded only in the sums, and a malformed amount is stored rather than refused forever.
    assert client.get("/admin/v1/usage").json()["rows"][0]["requests"] == 2


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_store_dedupes_by_request_id(backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_url")
    if backend == "postgresql":
        db.migrate(url)
    engine = db.create_engine(url)
    try:
        factory = db.session_factory(engine)
        assert store(factory, THREE) == (3, 0)
        assert store(factory, [THREE[0], record("r4"), record("r4")]) == (1, 2)
        big = [
            record(f"big-{i}", credits="0.5", key_id="k-bulk") for i in range(1200)
        ]  # more rows than one INSERT carries
        assert store(factory, big) == (1200, 0)
        assert store(factory, big) == (0, 1200)
        with factory() as session:
            rows = usage.report(session, usage.UsageQuery(group_by="key"))
        assert [(r.group, r.requests, r.credits) for r in rows] == [
            ("k-1", 3, "0.300375"),
            ("k-2", 1, "0.000000000001"),
            ("k-bulk", 1200, "600"),
        ]
    finally:
        engine.dispose()


def test_overlong_client_input_is_truncated_not_a_failed_batch(postgres_url: str) -> None:
    """A model name the client made up, longer than its column, must not wedge ingestion."""
    from infery_proto.v1 import usage_pb2

    from control_plane.resources import usage as usage_store
    from control_plane.store.db import open_store

    engine, sessions = open_store(postgres_url)
    try:
        record = usage_pb2.UsageRecord(
            request_id="r-long",
            started_at_ms=1_700_000_000_000,
            workspace_id="w",
            model_requested="m" * 5000,
            status=404,
            error_code="model_not_found",
            credits="0",
        )
        with sessions() as session:
            assert usage_store.store(session, [record]) == (1, 0)
            session.commit()
            stored = usage_store.get_record(session, "r-long")
        assert stored.model_requested == "m" * 128
    finally:
        engine.dispose()


def test_usage_by_endpoint_and_the_audio_units(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    store(
        session_factory,
        [
            record("s1", endpoint="/v1/audio/speech", characters=44, credits="0.00066"),
            record("t1", endpoint="/v1/audio/transcriptions", audio_ms=1500, credits="0.00015"),
            record("t2", endpoint="/v1/audio/transcriptions", audio_ms=2500, credits="0.00025"),
            record("c1", endpoint="/v1/chat/completions", credits="1"),
        ],
    )
    rows = client.get("/admin/v1/usage", params={"group_by": "endpoint"}).json()["rows"]
    assert [(r["group"], r["requests"], r["credits"]) for r in rows] == [
        ("/v1/audio/speech", 1, "0.00066"),
        ("/v1/audio/transcriptions", 2, "0.0004"),
        ("/v1/chat/completions", 1, "1"),
    ]
    (only,) = client.get("/admin/v1/usage", params={"endpoint": "/v1/audio/transcriptions"}).json()["rows"]
    assert (only["requests"], only["credits"]) == (2, "0.0004")
    speech = client.get("/admin/v1/usage/requests/s1").json()
    heard = client.get("/admin/v1/usage/requests/t2").json()
    assert (speech["endpoint"], speech["characters"], speech["audio_ms"]) == ("/v1/audio/speech", 44, 0)
    assert (heard["endpoint"], heard["characters"], heard["audio_ms"]) == (
        "/v1/audio/transcriptions",
        0,
        2500,
    )
