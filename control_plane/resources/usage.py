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

GROUP_BY = ("key", "model", "member", "day")
# Rows per INSERT: 23 columns each stays far below SQLite's 32766 bound parameters.
_INSERT_CHUNK = 500
_GROUP_COLUMNS: dict[str, Any] = {
    "key": col(UsageRecord.key_id),
    "model": col(UsageRecord.model_used),
    "member": col(UsageRecord.member_id),
    "day": col(UsageRecord.day),
}


# --- ingestion ---------------------------------------------------------------------------


def store(session: Session, records: Sequence[usage_pb2.UsageRecord]) -> tuple[int, int]:
    """Insert records whose request_id is new; returns (stored, duplicates). Does not commit.

    INSERT ... ON CONFLICT DO NOTHING makes concurrent and repeated deliveries safe without
    a read-then-write race, on SQLite and PostgreSQL alike. It runs as one executemany of a
    statement compiled once: a multi-row VALUES statement is recompiled for every batch
    size and cost ~10x the CPU per record. The counts come from one look-up of the ids
    already stored; they are statistics, the insert itself is what guarantees "once".
    """
    rows = {record.request_id: _row(record) for record in records if record.request_id}
    if not rows:
        return 0, len(records)
    connection = session.connection()
    table = UsageRecord.__table__  # type: ignore[attr-defined]
    known: set[str] = set()
    ids = list(rows)
    for start in range(0, len(ids), _INSERT_CHUNK):
        chunk = ids[start : start + _INSERT_CHUNK]
        query = sa.select(table.c.request_id).where(table.c.request_id.in_(chunk))
        known.update(connection.execute(query).scalars())
    fresh = [row for request_id, row in rows.items() if request_id not in known]
    if fresh:
        insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        connection.execute(insert(table).on_conflict_do_nothing(index_elements=["request_id"]), fresh)
    return len(fresh), len(records) - len(fresh)


_INT64 = 2**63 - 1

# Column widths of the text fields. Some fields echo client input (the model a client
# asked for); a value too long for PostgreSQL would fail the whole batch, which the
# data plane would then retry forever. Truncating at the boundary keeps the rest.
_WIDTHS = {
    column.name: column.type.length
    for column in UsageRecord.__table__.columns  # type: ignore[attr-defined]
    if isinstance(column.type, sa.String) and column.type.length
}


def _clamped(row: dict[str, Any]) -> dict[str, Any]:
    for name, width in _WIDTHS.items():
        value = row.get(name)
        if isinstance(value, str) and len(value) > width:
            row[name] = value[:width]
    return row


def _row(record: usage_pb2.UsageRecord) -> dict[str, Any]:
    started = datetime.fromtimestamp(record.started_at_ms / 1000, UTC)
    credits = record.credits or "0"
    try:
        pico = max(-_INT64, min(_INT64, to_pico(parse_decimal(credits))))
    except (ArithmeticError, ValueError):
        # Storing beats refusing: a refused batch would be retried forever by the spool.
        log.warning("usage record %s has malformed credits %r; counted as 0", record.request_id, credits)
        pico = 0
    return _clamped(
        {
            "request_id": record.request_id,
            "started_at_ms": record.started_at_ms,
            "day": started.date().isoformat(),
            "workspace_id": record.workspace_id,
            "member_id": record.member_id,
            "key_id": record.key_id,
            "endpoint": record.endpoint,
            "model_requested": record.model_requested,
            "model_used": record.model_used,
            "provider": record.provider,
            "fallback_from": record.fallback_from,
            "status": record.status,
            "input_tokens": record.input_tokens,
            "cached_input_tokens": record.cached_input_tokens,
            "output_tokens": record.output_tokens,
            "reasoning_tokens": record.reasoning_tokens,
            "credits": credits,
            "credits_pico": pico,
            "latency_ms": record.latency_ms,
            "ttft_ms": record.ttft_ms,
            "idempotent_replay": record.idempotent_replay,
            "stream": record.stream,
            "error_code": record.error_code,
        }
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
    group_by: str | None = None  # key | model | member | day; None = one total row


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
    )
    columns = (group, *sums) if group is not None else sums
    statement = sa.select(*columns).where(*_conditions(session, query))
    if group is not None:
        statement = statement.group_by(group).order_by(group)
    rows = []
    for result in session.connection().execute(statement).all():
        values = tuple(result)
        label = str(values[0]) if group is not None else "total"
        requests, input_tokens, cached, output, pico = values[1:] if group is not None else values
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
