"""Engine and session creation, and schema migration.

SQLite is the zero-setup default (WAL so the admin API and usage ingestion can write
while xDS reads); PostgreSQL is the production store, reached through psycopg 3.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

SessionFactory = Callable[[], Session]

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"
SQLITE_BUSY_TIMEOUT_MS = 5000


def normalize_url(url: str | URL) -> URL:
    """Accept the URL spellings people paste (`postgres://`, `postgresql://`) and pick psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def create_engine(url: str | URL) -> Engine:
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite":
        # hide_parameters: a failed statement's message must never carry a provider api_key into logs.
        return sa.create_engine(parsed, pool_pre_ping=True, hide_parameters=True)
    kwargs: dict[str, Any] = {
        "connect_args": {"check_same_thread": False, "timeout": 30},
        "hide_parameters": True,
    }
    if parsed.database in (None, "", ":memory:"):
        kwargs["poolclass"] = StaticPool  # one shared in-memory database, not one per connection
    else:
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, **kwargs)
    sa.event.listen(engine, "connect", _configure_sqlite)
    return engine


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: handlers serialise rows after the commit that wrote them.
    return sessionmaker(bind=engine, class_=Session, expire_on_commit=False)


def alembic_config(url: str | URL) -> Config:
    config = Config(str(ALEMBIC_INI))
    # Passed as an attribute, not a main option: ConfigParser would choke on '%' in passwords.
    config.attributes["url"] = normalize_url(url)
    return config


def migrate(url: str | URL) -> None:
    """Bring the database at `url` to the newest schema (Alembic upgrade head)."""
    config = alembic_config(url)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


def open_store(url: str | URL) -> tuple[Engine, sessionmaker[Session]]:
    """Migrate, then return the engine and a session factory: what the control plane needs at start."""
    migrate(url)
    engine = create_engine(url)
    return engine, session_factory(engine)
