"""Many rows in one round trip, in the driver's own SQL: the usage ingestion's two statements, and
the kept responses' upsert.

Usage ingestion writes one record per gateway request plus its rollups, and the Responses API
keeps one response per request (control_plane/response_store.py), so these statements are the
control plane's hot path, and the cheapest form differs per database:

- PostgreSQL: one statement over ``unnest`` of one array per column. Its text never changes,
  so psycopg parses it once and the server prepares it; a multi-row ``VALUES`` list instead
  costs psycopg a fresh parse of thousands of placeholders per batch (measured: most of the
  ingestion's CPU), and ``executemany`` a statement per row.
- SQLite: it runs in this process and has no arrays; a multi-row ``VALUES`` (to get
  ``RETURNING`` for all rows at once) and ``executemany`` (upserts) are its cheapest forms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

# SQLite binds at most 32,766 parameters per statement: 500 rows of up to 65 columns fit.
_SQLITE_ROWS_PER_STATEMENT = 500


def insert_new(
    connection: sa.Connection, table: sa.Table, rows: Sequence[Sequence[Any]], key: str
) -> list[Any]:
    """INSERT rows (in the table's column order) whose ``key`` is new; returns the keys inserted."""
    if not rows:
        return []
    columns = [column.name for column in table.columns]
    conflict = f"ON CONFLICT ({key}) DO NOTHING RETURNING {key}"
    if connection.dialect.name == "postgresql":
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) {_unnest(connection, table)} {conflict}"
        return list(connection.exec_driver_sql(sql, _arrays(rows, len(columns))).scalars())
    inserted: list[Any] = []
    row = f"({', '.join('?' * len(columns))})"
    for first in range(0, len(rows), _SQLITE_ROWS_PER_STATEMENT):
        chunk = rows[first : first + _SQLITE_ROWS_PER_STATEMENT]
        values = ", ".join([row] * len(chunk))
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES {values} {conflict}"
        inserted.extend(connection.exec_driver_sql(sql, tuple(v for r in chunk for v in r)).scalars())
    return inserted


def upsert_adding(
    connection: sa.Connection, table: sa.Table, rows: Sequence[Sequence[Any]], sums: Sequence[str]
) -> None:
    """INSERT rows (table column order); where the primary key exists, add the ``sums`` columns to it.

    Keys must be distinct within ``rows`` (PostgreSQL refuses to update a row twice in one statement).
    """
    if not rows:
        return
    columns = [column.name for column in table.columns]
    key = ", ".join(column.name for column in table.primary_key.columns)
    additions = ", ".join(f"{name} = {table.name}.{name} + excluded.{name}" for name in sums)
    conflict = f"ON CONFLICT ({key}) DO UPDATE SET {additions}"
    if connection.dialect.name == "postgresql":
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) {_unnest(connection, table)} {conflict}"
        connection.exec_driver_sql(sql, _arrays(rows, len(columns)))
        return
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) {conflict}"
    )
    connection.exec_driver_sql(sql, list(rows))


def upsert_replacing(connection: sa.Connection, table: sa.Table, rows: Sequence[Sequence[Any]]) -> None:
    """INSERT rows (table column order); where the primary key exists, replace its other columns.

    One statement whatever the rows, with no read first, so concurrent writers of one key cannot
    race to insert it twice. Keys must be distinct within ``rows`` (PostgreSQL refuses to update a
    row twice in one statement); pass them sorted by key, so that two writers of overlapping keys
    lock them in the same order instead of deadlocking.
    """
    if not rows:
        return
    sql = _replacing(connection, table)
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(sql, _arrays(rows, len(table.columns)))
        return
    connection.exec_driver_sql(sql, list(rows))


def _replacing(connection: sa.Connection, table: sa.Table) -> str:
    """:func:`upsert_replacing`'s statement, built once per table and dialect."""
    cached = _REPLACINGS.get((table.name, connection.dialect.name))
    if cached is not None:
        return cached
    columns = [column.name for column in table.columns]
    keys = [column.name for column in table.primary_key.columns]
    replaced = ", ".join(f"{name} = excluded.{name}" for name in columns if name not in keys)
    conflict = f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {replaced}"
    if connection.dialect.name == "postgresql":
        values = _unnest(connection, table)
    else:
        values = f"VALUES ({', '.join('?' * len(columns))})"
    sql = _REPLACINGS[table.name, connection.dialect.name] = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) {values} {conflict}"
    )
    return sql


_REPLACINGS: dict[tuple[str, str], str] = {}


def _unnest(connection: sa.Connection, table: sa.Table) -> str:
    """``SELECT * FROM unnest(%s::type[], ...)``: one typed array parameter per column."""
    cached = _UNNESTS.get(table.name)
    if cached is None:
        arrays = ", ".join(f"%s::{column.type.compile(connection.dialect)}[]" for column in table.columns)
        cached = _UNNESTS[table.name] = f"SELECT * FROM unnest({arrays})"
    return cached


_UNNESTS: dict[str, str] = {}


def _arrays(rows: Sequence[Sequence[Any]], width: int) -> tuple[list[Any], ...]:
    """Rows transposed to one list per column (psycopg sends a list as an array): one parameter set."""
    columns = tuple(list(values) for values in zip(*rows, strict=True))
    if len(columns) != width:
        raise ValueError(f"rows have {len(columns)} values, the table {width} columns")
    return columns
