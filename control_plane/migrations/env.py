"""Alembic environment: migrates the connection the application hands over, or the
database named by INFERY_DATABASE_URL when run from the alembic CLI."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from control_plane.settings import Settings
from control_plane.store import db, tables

target_metadata = tables.SQLModel.metadata
# A constant key, so concurrent replicas starting against one PostgreSQL migrate one at a time.
_PG_MIGRATION_LOCK = 0x1AFE2


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
    )
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    url = context.config.attributes.get("url") or Settings.from_env().database_url
    engine = db.create_engine(url)
    try:
        with engine.begin() as connection:
            run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_online()
