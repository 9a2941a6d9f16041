"""Describe a failure for the log without the data that caused it.

SQLAlchemy's ``hide_parameters`` keeps bound values out of its own messages, but the
database's message can still carry them: PostgreSQL's ``DETAIL: Failing row contains
(..., sk-...)`` repeats the whole row, provider api_key included. Database errors are
therefore described by what went wrong and where (SQLSTATE, table, constraint, the SQL
text without parameters), never by the driver's message text.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from sqlalchemy.exc import StatementError


def describe(exc: BaseException) -> str:
    """One line saying what failed; for database errors, no value from the statement or the row."""
    if isinstance(exc, StatementError):
        statement = " ".join((exc.statement or "").split())[:300]
        inner = exc.orig if exc.orig is not None else None
        return f"{type(exc).__name__}: {_driver_error(inner) if inner else 'error'} in [{statement}]"
    if _is_driver_error(exc):
        return _driver_error(exc)
    return f"{type(exc).__name__}: {exc}"


def safe_traceback(exc: BaseException) -> str:
    """Like a logged traceback (the chain of causes, each with its frames), messages from :func:`describe`."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    parts = [
        "Traceback (most recent call last):\n" + "".join(traceback.format_tb(e.__traceback__)) + describe(e)
        for e in reversed(chain)
    ]
    return "\n\nwhich caused:\n\n".join(parts)


def _is_driver_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in ("psycopg", "sqlite3", "psycopg2")


def _driver_error(exc: BaseException) -> str:
    diag = getattr(exc, "diag", None)  # psycopg: structured fields, none of which holds row values
    if diag is not None:
        fields = {
            "sqlstate": getattr(exc, "sqlstate", None),
            "table": diag.table_name,
            "column": diag.column_name,
            "constraint": diag.constraint_name,
        }
        return f"{type(exc).__name__} " + " ".join(f"{k}={v}" for k, v in fields.items() if v)
    name = getattr(exc, "sqlite_errorname", None)  # sqlite3: its messages name tables and constraints only
    return f"{type(exc).__name__} {name or ''} ({str(exc).splitlines()[0] if str(exc) else ''})".strip()


class SafeFormatter(logging.Formatter):
    """Every exception the control plane logs (uvicorn's too) goes through :func:`safe_traceback`."""

    def formatException(self, ei: Any) -> str:
        _type, exc, _tb = ei
        return safe_traceback(exc) if isinstance(exc, BaseException) else super().formatException(ei)
