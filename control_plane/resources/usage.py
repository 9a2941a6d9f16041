"""Usage records: exactly-once storage of what ext_proc reports, and the analytics queries."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from infery_proto.v1 import usage_pb2
from sqlalchemy import func
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from control_plane.decimals import from_pico, parse_decimal, to_pico
from control_plane.errors import InvalidRequest, NotFound
from control_plane.schemas import UsageRecordOut, UsageRow
from control_plane.store.tables import Member, UsageRecord, Workspace

log = logging.getLogger(__name__)

GROUP_BY = ("key", "model", "member", "day", "endpoint")
_GROUP_COLUMNS: dict[str, Any] = {
    "key": col(UsageRecord.key_id),
    "model": col(UsageRecord.model_used),
    "member": col(UsageRecord.member_id),
    "day": col(UsageRecord.day),
    "endpoint": col(UsageRecord.endpoint),
}


# --- ingestion ---------------------------------------------------------------------------


def store(session: Session, records: Sequence[usage_pb2.UsageRecord]) -> tuple[int, int]:
    """Insert records whose request_id is new; returns (stored, duplicates). Does not commit.

    INSERT ... ON CONFLICT DO NOTHING makes concurrent and repeated deliveries safe without
    a read-then-write race, on SQLite and PostgreSQL alike; the driver's row count of that
    executemany (the sum over its rows, on both) says how many were new. This is the hot
    path of the control plane, one row per gateway request, so the statement is the
    driver's own SQL, compiled once per dialect, and rows are plain tuples: SQLAlchemy's
    per-row parameter processing cost more than SQLite's insert itself.
    """
    rows = {record.request_id: _row(record) for record in records if record.request_id}
    if not rows:
        return 0, len(records)
    connection = session.connection()
    sql, names = _insert_sql(connection.dialect)
    params: list[Any] = list(rows.values())
    if names is not None:
        params = [dict(zip(names, row, strict=True)) for row in params]
    stored = connection.exec_driver_sql(sql, params).rowcount
    return stored, len(records) - stored


_INT64 = 2**63 - 1
_TABLE = UsageRecord.__table__  # type: ignore[attr-defined]
# Column widths of the text fields. Some fields echo client input (the model a client
# asked for); a value too long for PostgreSQL would fail the whole batch, which the
# data plane would then retry forever. Truncating at the boundary keeps the rest.
_WIDTHS = {
    column.name: column.type.length
    for column in _TABLE.columns
    if isinstance(column.type, sa.String) and column.type.length
}
_INSERTS: dict[str, tuple[str, tuple[str, ...] | None]] = {}


def _insert_sql(dialect: sa.Dialect) -> tuple[str, tuple[str, ...] | None]:
    """The insert as the driver's own SQL, and the parameter names when it takes named ones."""
    cached = _INSERTS.get(dialect.name)
    if cached is None:
        insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
        statement = insert(_TABLE).on_conflict_do_nothing(index_elements=["request_id"])
        compiled = statement.compile(dialect=dialect, column_keys=list(_COLUMNS))
        order = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
        if order != _COLUMNS:
            raise RuntimeError(f"usage insert binds {order}, expected the table's columns {_COLUMNS}")
        if not dialect.supports_sane_multi_rowcount:
            raise RuntimeError(f"{dialect.name}: no row count for executemany; stored counts would be wrong")
        cached = _INSERTS[dialect.name] = (compiled.string, None if compiled.positional else _COLUMNS)
    return cached


def _clamp(field: str, value: str) -> str:
    return value[: _WIDTHS[field]]


# The table's columns in its own order; ``_row`` builds its tuples in this order, and
# ``_insert_sql`` checks that the table agrees.
_COLUMNS = (
    "request_id", "started_at_ms", "day", "workspace_id", "member_id", "key_id", "endpoint",
    "model_requested", "model_used", "provider", "fallback_from", "status", "input_tokens",
    "cached_input_tokens", "output_tokens", "reasoning_tokens", "credits", "credits_pico",
    "latency_ms", "ttft_ms", "idempotent_replay", "stream", "error_code", "usage_estimated",
    "usage_rejected", "characters", "audio_ms", "file_bytes",
)  # fmt: skip


def _row(record: usage_pb2.UsageRecord) -> tuple[Any, ...]:
    """The record as a row, in ``_COLUMNS`` order."""
    started = datetime.fromtimestamp(record.started_at_ms / 1000, UTC)
    credits = record.credits or "0"
    try:
        pico = max(-_INT64, min(_INT64, to_pico(parse_decimal(credits))))
    except (ArithmeticError, ValueError):
        # Storing beats refusing: a refused batch would be retried forever by the spool.
        log.warning("usage record %s has malformed credits %r; counted as 0", record.request_id, credits)
        pico = 0
    return (
        _clamp("request_id", record.request_id),
        record.started_at_ms,
        started.date().isoformat(),
        _clamp("workspace_id", record.workspace_id),
        _clamp("member_id", record.member_id),
        _clamp("key_id", record.key_id),
        _clamp("endpoint", record.endpoint),
        _clamp("model_requested", record.model_requested),
        _clamp("model_used", record.model_used),
        _clamp("provider", record.provider),
        _clamp("fallback_from", record.fallback_from),
        record.status,
        record.input_tokens,
        record.cached_input_tokens,
        record.output_tokens,
        record.reasoning_tokens,
        _clamp("credits", credits),
        pico,
        record.latency_ms,
        record.ttft_ms,
        record.idempotent_replay,
        record.stream,
        _clamp("error_code", record.error_code),
        record.usage_estimated,
        _clamp("usage_rejected", record.usage_rejected),
        max(0, min(_INT64, record.characters)),
        max(0, min(_INT64, record.audio_ms)),
        max(0, min(_INT64, record.file_bytes)),
    )


# --- queries -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageQuery:
    workspace: str | None = None  # name or id
    key: str | None = None  # key id
    member: str | None = None  # member id or email
    model: str | None = None  # slug that served the request
    start: str | None = None  # ISO-8601 date or datetime, inclusive
    end: str | None = None  # ISO-8601 date (inclusive day) or datetime (exclusive)
    group_by: str | None = None  # key | model | member | day | endpoint; None = one total row
    endpoint: str | None = None  # the path the client called, e.g. /v1/audio/speech


def report(session: Session, query: UsageQuery) -> list[UsageRow]:
    if query.group_by is not None and query.group_by not in GROUP_BY:
        raise InvalidRequest(f"group_by must be one of {', '.join(GROUP_BY)}", param="group_by")
    group = _GROUP_COLUMNS[query.group_by] if query.group_by else None
    sums = (
        func.count().label("requests"),
        func.coalesce(func.sum(col(UsageRecord.input_tokens)), 0),
        func.coalesce(func.sum(col(UsageRecord.cached_input_tokens)), 0),
        func.coalesce(func.sum(col(UsageRecord.output_tokens)), 0),
        func.coalesce(func.sum(col(UsageRecord.credits_pico)), 0),
        func.coalesce(func.sum(col(UsageRecord.file_bytes)), 0),
    )
    columns = (group, *sums) if group is not None else sums
    statement = sa.select(*columns).where(*_conditions(session, query))
    if group is not None:
        statement = statement.group_by(group).order_by(group)
    rows = []
    for result in session.connection().execute(statement).all():
        values = tuple(result)
        label = str(values[0]) if group is not None else "total"
        requests, input_tokens, cached, output, pico, file_bytes = values[1:] if group is not None else values
        if group is None and requests == 0:
            break
        rows.append(
            UsageRow(
                group=label,
                requests=int(requests),
                input_tokens=int(input_tokens),
                cached_input_tokens=int(cached),
                output_tokens=int(output),
                credits=from_pico(int(Decimal(pico))),
                file_bytes=int(file_bytes),
            )
        )
    return rows


def _conditions(session: Session, query: UsageQuery) -> list[Any]:
    conditions: list[Any] = []
    workspace_id = None
    if query.workspace:
        found = session.exec(select(Workspace.id).where(col(Workspace.name) == query.workspace)).first()
        # An unknown name may still be the id of a deleted workspace whose usage is kept.
        workspace_id = found or query.workspace
        conditions.append(col(UsageRecord.workspace_id) == workspace_id)
    if query.key:
        conditions.append(col(UsageRecord.key_id) == query.key)
    if query.member:
        conditions.append(col(UsageRecord.member_id).in_(_member_ids(session, query.member, workspace_id)))
    if query.model:
        conditions.append(col(UsageRecord.model_used) == query.model)
    if query.endpoint:
        conditions.append(col(UsageRecord.endpoint) == query.endpoint)
    if query.start:
        conditions.append(col(UsageRecord.started_at_ms) >= _bound_ms(query.start, "from", end=False))
    if query.end:
        conditions.append(col(UsageRecord.started_at_ms) < _bound_ms(query.end, "to", end=True))
    return conditions


def _member_ids(session: Session, ref: str, workspace_id: str | None) -> list[str]:
    if "@" not in ref:
        return [ref]
    statement = select(Member.id).where(col(Member.email) == ref.strip().lower())
    if workspace_id is not None:
        statement = statement.where(col(Member.workspace_id) == workspace_id)
    return list(session.exec(statement).all())


def _bound_ms(value: str, param: str, *, end: bool) -> int:
    """Milliseconds of a time bound; a bare date as `to` includes that whole day."""
    value = value.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime.combine(day + timedelta(days=1) if end else day, time(), UTC)
        else:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    except (ValueError, OverflowError):
        raise InvalidRequest(f"{param} must be an ISO-8601 date or datetime", param=param) from None


def get_record(session: Session, request_id: str) -> UsageRecord:
    row = session.get(UsageRecord, request_id)
    if row is None:
        raise NotFound(f"no usage recorded for request {request_id!r}", param="request_id")
    return row


def record_out(row: UsageRecord) -> UsageRecordOut:
    fields = row.model_dump(exclude={"started_at_ms", "day", "credits_pico"})
    return UsageRecordOut(started_at=datetime.fromtimestamp(row.started_at_ms / 1000, UTC), **fields)
