"""Admin authentication: one bearer token for the whole admin API.

The token comes from INFERY_ADMIN_TOKEN, or is generated at the first start and written
to INFERY_ADMIN_TOKEN_FILE (mode 600; the log says where, never what); only its SHA-256
is stored. Comparing digests with `hmac.compare_digest` keeps the
check constant-time whatever the token's length.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from fastapi import Request
from sqlalchemy.exc import IntegrityError

from control_plane.errors import Unauthorized
from control_plane.settings import Settings
from control_plane.store.db import SessionFactory
from control_plane.store.tables import Setting

ADMIN_TOKEN_SETTING = "admin_token_sha256"

log = logging.getLogger("infery.control_plane.auth")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def ensure_admin_token(settings: Settings, session_factory: SessionFactory) -> str | None:
    """Generate, store (hashed) and write to its file the admin token unless one exists; return it if new."""
    if settings.admin_token:
        return None
    with session_factory() as session:
        if session.get(Setting, ADMIN_TOKEN_SETTING) is not None:
            return None
        token = "infadm_" + secrets.token_urlsafe(32)
        # The file first: a token stored but written nowhere would lock everyone out.
        path = write_owner_only(Path(settings.admin_token_file), token)
        session.add(Setting(key=ADMIN_TOKEN_SETTING, value=_digest(token)))
        try:
            session.commit()
        except IntegrityError:  # another replica generated one first; theirs stands
            return None
    log.warning("generated the admin token: it is in %s (mode 600)", path)
    return token


def write_owner_only(path: Path, secret: str) -> Path:
    """Replace ``path`` with ``secret``, readable by this user only from the first byte on."""
    path = path.expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(secret + "\n")
    os.replace(partial, path)
    return path


class AdminAuth:
    """FastAPI dependency that rejects requests without the admin bearer token."""

    def __init__(self, settings: Settings, session_factory: SessionFactory) -> None:
        self._expected = _digest(settings.admin_token) if settings.admin_token else None
        self._session_factory = session_factory

    def _expected_digest(self) -> str | None:
        if self._expected is None:
            with self._session_factory() as session:
                stored = session.get(Setting, ADMIN_TOKEN_SETTING)
                self._expected = stored.value if stored is not None else None
        return self._expected

    def __call__(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expected = self._expected_digest()
        token = token.strip()
        if scheme.lower() != "bearer" or not token or expected is None:
            raise Unauthorized("missing or invalid admin token")
        if not hmac.compare_digest(_digest(token), expected):
            raise Unauthorized("missing or invalid admin token")
