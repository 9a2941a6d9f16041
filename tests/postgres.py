"""A throwaway PostgreSQL database for the tests that need the production store (the suite's
PostgreSQL runs locally on the default port; ``INFERY_TEST_POSTGRES_URL`` points elsewhere)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get("INFERY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database's URL, dropped afterwards."""
    admin = make_url(POSTGRES_URL)
    name = f"infery_test_{uuid.uuid4().hex[:12]}"
    try:
        connection = psycopg.connect(
            admin.set(drivername="postgresql").render_as_string(hide_password=False),
            autocommit=True,
            connect_timeout=3,
        )
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL not reachable at {POSTGRES_URL} (the suite needs it): {exc}")
    with connection:
        connection.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin.set(database=name).render_as_string(hide_password=False)
        finally:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
