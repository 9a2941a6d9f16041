"""Nothing secret reaches the control plane's log: provider keys in failed writes, generated admin tokens."""

from __future__ import annotations

import hashlib
import logging
import stat
import sys
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from cp_support import ADMIN_TOKEN, AUTH, assert_error
from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

from control_plane.api import create_app
from control_plane.api.auth import ADMIN_TOKEN_SETTING
from control_plane.settings import Settings
from control_plane.store import db
from control_plane.store.tables import Setting
from infery.stack import free_port, spawn, wait_until

SECRET = "sk-must-never-be-logged-7f3a"


def test_a_failing_provider_write_never_logs_its_api_key(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL's DETAIL ("Failing row contains (..., sk-...)") carries the row: it stays out of the log."""
    engine, factory = db.open_store(postgres_url)
    try:
        with engine.begin() as connection:  # an unexpected constraint, as a later migration might add
            connection.execute(
                sa.text("ALTER TABLE providers ADD CONSTRAINT no_x CHECK (base_url NOT LIKE '%x%')")
            )
        app = create_app(Settings(database_url=postgres_url, admin_token=ADMIN_TOKEN), factory)
        caplog.set_level(logging.DEBUG)
        with TestClient(app, headers=AUTH, raise_server_exceptions=False) as client:
            body = {"name": "p", "kind": "openai", "base_url": "https://x.example", "api_key": SECRET}
            response = client.post("/admin/v1/providers", json=body)
            assert response.status_code == 409, response.text
            assert SECRET not in response.text
        assert caplog.records, "the failures are logged"
        logged = "\n".join(
            r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")
            for r in caplog.records
        )
        assert "provider" in logged  # the log still says what failed
        assert SECRET not in logged
    finally:
        engine.dispose()


def test_unexpected_errors_are_logged_without_sql_parameters(
    client: TestClient, session_factory: sessionmaker[Session], caplog: pytest.LogCaptureFixture
) -> None:
    with session_factory() as session:  # an insert that fails for a reason no handler expects
        session.exec(  # type: ignore[call-overload]
            sa.text("CREATE TRIGGER broken BEFORE INSERT ON providers BEGIN SELECT * FROM gone; END")
        )
        session.commit()
    caplog.set_level(logging.DEBUG)
    bad = TestClient(client.app, headers=AUTH, raise_server_exceptions=False)
    response = bad.post(
        "/admin/v1/providers",
        json={"name": "p", "kind": "openai", "base_url": "https://p.example", "api_key": SECRET},
    )
    assert_error(response, 500, "internal_error")
    logged = caplog.text + "".join(
        logging.Formatter().formatException(r.exc_info) for r in caplog.records if r.exc_info
    )
    assert "OperationalError" in logged and SECRET not in logged


def test_a_generated_admin_token_goes_to_an_owner_only_file_not_the_log(
    sqlite_url: str,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token_file = tmp_path / "state" / "admin-token"
    settings = Settings(database_url=sqlite_url, admin_token_file=str(token_file))
    app = create_app(settings, session_factory)
    token = token_file.read_text().strip()
    assert token.startswith("infadm_")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    captured = capsys.readouterr()
    assert token not in captured.out + captured.err + caplog.text
    assert str(token_file) in caplog.text  # the log says where it is
    with session_factory() as session:
        stored = session.get(Setting, ADMIN_TOKEN_SETTING)
    assert stored is not None and stored.value == hashlib.sha256(token.encode()).hexdigest()
    with TestClient(app) as client:
        assert (
            client.get("/admin/v1/providers", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        )


def test_the_control_plane_process_logs_a_failed_write_without_its_api_key(
    postgres_url: str, tmp_path: Path
) -> None:
    """The real process: FastAPI's 500 handler re-raises to uvicorn, which logs the exception too.

    A trigger that fails with the row's api_key in its message stands for any database
    error whose text repeats the values it was given.
    """
    admin_port = free_port()
    proc = spawn(
        "control_plane",
        [sys.executable, "-m", "control_plane"],
        tmp_path / "logs",
        {
            "INFERY_DATABASE_URL": postgres_url,
            "INFERY_ADMIN_TOKEN": ADMIN_TOKEN,
            "INFERY_ADMIN_PORT": str(admin_port),
            "INFERY_XDS_PORT": str(free_port()),
        },
    )
    try:
        url = f"http://127.0.0.1:{admin_port}"
        wait_until(
            lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, "the control plane", 60, [proc]
        )
        engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN"
                    " RAISE EXCEPTION 'refusing %', NEW.api_key; END $$ LANGUAGE plpgsql"
                )
            )
            connection.execute(
                sa.text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON providers FOR EACH ROW EXECUTE FUNCTION refuse()"
                )
            )
        engine.dispose()
        response = httpx.post(
            f"{url}/admin/v1/providers",
            headers=AUTH,
            json={"name": "p", "kind": "openai", "base_url": "https://p.example", "api_key": SECRET},
            timeout=10,
        )
        assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
        wait_until(lambda: "RaiseException" in proc.log(), "the failure in the log", 10, [proc])
    finally:
        proc.stop()
    log = proc.log()
    assert "providers" in log  # what failed is there
    assert SECRET not in log
