"""Probes and /metrics on the admin port: /healthz (live), /readyz (store reachable and migrated)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cp_support import ADMIN_TOKEN, AUTH
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

from control_plane.api import create_app
from control_plane.metrics import ControlPlaneMetrics
from control_plane.settings import Settings


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def test_readyz_is_ok_on_a_migrated_store(client: TestClient) -> None:
    client.headers.pop("Authorization")
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ok", "revision": 0}


def test_readyz_is_503_when_migrations_are_not_current(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    with session_factory() as session:
        session.execute(text("UPDATE alembic_version SET version_num = 'an_older_one'"))
        session.commit()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "reason": "migrations not current"}


def test_readyz_is_503_when_the_store_is_unreachable(
    sqlite_url: str, session_factory: sessionmaker[Session]
) -> None:
    reachable = [True]

    @contextmanager
    def sessions() -> Iterator[Session]:
        if not reachable[0]:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        with session_factory() as session:
            yield session

    app = create_app(Settings(database_url=sqlite_url, admin_token=ADMIN_TOKEN), sessions)  # type: ignore[arg-type]
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 200
        reachable[0] = False
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "reason": "store: OperationalError"}


def test_metrics_need_no_token_and_count_admin_requests_by_route_template(
    sqlite_url: str, session_factory: sessionmaker[Session]
) -> None:
    metrics = ControlPlaneMetrics()
    app = create_app(Settings(database_url=sqlite_url, admin_token=ADMIN_TOKEN), session_factory, metrics)
    with TestClient(app) as client:
        created = client.post("/admin/v1/workspaces", json={"name": "secret-team-name"}, headers=AUTH)
        assert created.status_code == 201
        client.get("/admin/v1/workspaces/secret-team-name", headers=AUTH)
        client.get("/admin/v1/providers")  # no token: 401
        scraped = client.get("/metrics")
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    values = samples(scraped.text)
    route = "/admin/v1/workspaces/{name}"
    assert (
        values[("infery_admin_requests_total", (("method", "GET"), ("route", route), ("status", "200")))] == 1
    )
    assert (
        values[
            (
                "infery_admin_requests_total",
                (("method", "GET"), ("route", "/admin/v1/providers"), ("status", "401")),
            )
        ]
        == 1
    )
    assert "secret-team-name" not in scraped.text  # route templates, never names
    assert ADMIN_TOKEN not in scraped.text
