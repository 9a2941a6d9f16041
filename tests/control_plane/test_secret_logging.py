"""Nothing secret reaches the control plane's log: provider keys in failed writes, generated admin tokens."""

from __future__ import annotations

import hashlib
import logging
import stat
from pathlib import Path

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
