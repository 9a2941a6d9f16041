"""Admin token generation (printed once, stored hashed) and settings from the environment."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

from control_plane.api import create_app
from control_plane.api.auth import ADMIN_TOKEN_SETTING
from control_plane.settings import DEFAULT_DATABASE_URL, Settings
from control_plane.store.tables import Setting


def test_generated_token_is_written_once_and_stored_hashed(
    sqlite_url: str,
    session_factory: sessionmaker[Session],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # Changed on purpose (issue 11): the token used to be printed; now it goes to an owner-only file.
    token_file = tmp_path / "admin-token"
    settings = Settings(database_url=sqlite_url, admin_token_file=str(token_file))
    app = create_app(settings, session_factory)
    token = token_file.read_text().strip()
    assert token not in capsys.readouterr().err

    token_file.unlink()
    create_app(settings, session_factory)  # a restart does not make a new one
    assert capsys.readouterr().err == "" and not token_file.exists()
    with session_factory() as session:
        stored = session.get(Setting, ADMIN_TOKEN_SETTING)
    assert stored is not None and stored.value == hashlib.sha256(token.encode()).hexdigest()

    with TestClient(app) as client:
        assert (
            client.get("/admin/v1/providers", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        )
        assert (
            client.get("/admin/v1/providers", headers={"Authorization": f"Bearer {token}x"}).status_code
            == 401
        )


def test_env_token_wins_and_nothing_is_generated(
    sqlite_url: str, session_factory: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(Settings(database_url=sqlite_url, admin_token="from-env"), session_factory)
    assert capsys.readouterr().err == ""
    with TestClient(app) as client:
        assert client.get("/admin/v1/models", headers={"Authorization": "bearer from-env"}).status_code == 200


def test_settings_from_env() -> None:
    defaults = Settings.from_env({})
    assert defaults.database_url == DEFAULT_DATABASE_URL and defaults.admin_token is None
    assert (defaults.admin_port, defaults.xds_port, defaults.listen_port) == (8081, 18000, 8080)
    assert defaults.max_request_bytes == 32 * 1024 * 1024 and defaults.host == "127.0.0.1"
    custom = Settings.from_env(
        {
            "INFERY_DATABASE_URL": "postgresql://u@h/db",
            "INFERY_ADMIN_TOKEN": "t",
            "INFERY_ADMIN_PORT": "9",
            "INFERY_XDS_PORT": "10",
            "INFERY_LISTEN_PORT": "11",
            "INFERY_MAX_REQUEST_BYTES": "1024",
            "INFERY_CONFIG": "gateway.yaml",
            "INFERY_HOST": "0.0.0.0",
            "INFERY_UNRELATED": "x",
        }
    )
    assert custom == Settings(
        database_url="postgresql://u@h/db",
        admin_token="t",
        admin_port=9,
        xds_port=10,
        listen_port=11,
        max_request_bytes=1024,
        config="gateway.yaml",
        host="0.0.0.0",
    )
    assert Settings.from_env({"INFERY_ADMIN_TOKEN": ""}).admin_token is None
    assert defaults.admin_token_file == "./.infery/admin-token"
    assert Settings.from_env({"INFERY_ADMIN_TOKEN_FILE": "/run/t"}).admin_token_file == "/run/t"
    with pytest.raises(ValueError, match="INFERY_ADMIN_PORT"):
        Settings.from_env({"INFERY_ADMIN_PORT": "eighty"})
