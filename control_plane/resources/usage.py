"""Usage records: exactly-once storage of what ext_proc reports, and the analytics queries."""

from __future__ import annotations

import logging
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from infery_proto.v1 import usage_pb2
from sqlalchemy import func
from sqlmodel import Session, col, select

from control_plane.decimals import from_pico, parse_decimal, to_pico
from control_plane.errors import InvalidRequest, NotFound
from control_plane.resources import usage_rollups
from control_plane.schemas import UsageRecordOut, UsageRow
from control_plane.store import bulk_sql
from control_plane.store.tables import Member, UsageRecord, UsageRollup, Workspace

log = logging.getLogger(__name__)

GROUP_BY = ("key", "model", "member", "day", "endpoint", "batch")


# --- ingestion ---------------------------------------------------------------------------


def store(session: Session, records: Sequence[usage_pb2.UsageRecord]) -> tuple[int, int]:
    """Insert records whose request_id is new and add them to the rollups; returns (stored, duplicates).

    Does not commit: the records and their rollups commit together. INSERT ... ON CONFLICT DO
    NOTHING makes concurrent and repeated deliveries safe without a read-then-write race, on
    SQLite and PostgreSQL alike, and its RETURNING names the rows this statement inserted, which
    are exactly the ones the rollups must count. This is the hot path of the control plane, one
    row per gateway request, so rows are plain tuples written by ``bulk_sql`` in the driver's own
    SQL: SQLAlchemy's per-row parameter processing cost more than the insert itself.
    """
    rows = {record.request_id: _row(record) for record in records if record.request_id}
    if not rows:
        return 0, len(records)
    connection = session.connection()
    new_ids = bulk_sql.insert_new(connection, _TABLE, list(rows.values()), "request_id")
    usage_rollups.add(connection, (_rollup_fields(rows[request_id]) for request_id in new_ids))
    return len(new_ids), len(records) - len(new_ids)


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


def _clamp(field: str, value: str) -> str:
    return value[: _WIDTHS[field]]


# The table's columns in its own order; ``_row`` builds its tuples in this order.
_COLUMNS = (
    "request_id", "started_at_ms", "day", "workspace_id", "member_id", "key_id", "endpoint",
    "model_requested", "model_used", "provider", "fallback_from", "status", "input_tokens",
    "cached_input_tokens", "output_tokens", "reasoning_tokens", "credits", "credits_pico",
    "latency_ms", "ttft_ms", "idempotent_replay", "stream", "error_code", "usage_estimated",
    "usage_rejected", "characters", "audio_ms", "file_bytes", "batch_id", "custom_id",
    "parent_request_id",
)  # fmt: skip


if tuple(column.name for column in _TABLE.columns) != _COLUMNS:
    raise RuntimeError(f"usage rows are {_COLUMNS}, the table's columns {[c.name for c in _TABLE.columns]}")
_rollup_fields = operator.itemgetter(*(_COLUMNS.index(name) for name in usage_rollups.FIELDS))


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
        _clamp("batch_id", record.batch_id),
        _clamp("custom_id", record.custom_id),
        _clamp("parent_request_id", record.parent_request_id),
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
    group_by: str | None = None  # key | model | member | day | endpoint | batch; None = one total row
    endpoint: str | None = None  # the path the client called, e.g. /v1/audio/speech
    batch: str | None = None  # a batch id: its lines only


def report(session: Session, query: UsageQuery, *, rollups: bool = True) -> list[UsageRow]:
    """Sums per group, read from the rollups where whole hours and days allow and from records elsewhere.

    ``rollups=False`` reads every record in the range: the reference the rollups are tested
    against, and the same sums by construction of ``usage_rollups.plan``.
    """
    if query.group_by is not None and query.group_by not in GROUP_BY:
        raise InvalidRequest(f"group_by must be one of {', '.join(GROUP_BY)}", param="group_by")
    start = _bound_ms(query.start, "from", end=False) if query.start else None
    end = _bound_ms(query.end, "to", end=True) if query.end else None
    # The rollups keep no batch id: a report by batch reads the records (the batch_id index).
    rollups = rollups and not (query.batch or query.group_by == "batch")
    segments = usage_rollups.plan(start, end) if rollups else [usage_rollups.Segment("records", start, end)]
    if not segments:
        return []
    filters = _filters(session, query)
    arms = [_segment_sums(segment, query.group_by, filters) for segment in segments]
    sums = (arms[0] if len(arms) == 1 else sa.union_all(*arms)).subquery()
    totals = [func.coalesce(func.sum(sums.c[name]), 0) for name in usage_rollups.SUMS]
    if query.group_by is None:
        statement: Any = sa.select(*totals)
    else:
        statement = sa.select(sums.c.grp, *totals).group_by(sums.c.grp).order_by(sums.c.grp)
    rows = []
    for result in session.connection().execute(statement).all():
        values = tuple(result)
        label = str(values[0]) if query.group_by is not None else "total"
        requests, input_tokens, cached, output, pico, file_bytes = (
            values[1:] if query.group_by is not None else values
        )
        if query.group_by is None and requests == 0:
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


_ROLLUPS = UsageRollup.__table__  # type: ignore[attr-defined]
# The column each group_by names, the same in the records and in the rollups.
_GROUP_COLUMN = {
    "key": "key_id", "model": "model_used", "member": "member_id", "day": "day", "endpoint": "endpoint",
    "batch": "batch_id",  # the records' only: a batch's report reads its records (see ``report``)
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Filters:
    """A query's filters with names resolved to ids: column name -> the values it may take."""

    equal: dict[str, str]
    member_ids: list[str] | None


def _filters(session: Session, query: UsageQuery) -> _Filters:
    equal: dict[str, str] = {}
    workspace_id = None
    if query.workspace:
        found = session.exec(select(Workspace.id).where(col(Workspace.name) == query.workspace)).first()
        # An unknown name may still be the id of a deleted workspace whose usage is kept.
        workspace_id = equal["workspace_id"] = found or query.workspace
    if query.key:
        equal["key_id"] = query.key
    if query.model:
        equal["model_used"] = query.model
    if query.endpoint:
        equal["endpoint"] = query.endpoint
    if query.batch:
        equal["batch_id"] = query.batch
    member_ids = _member_ids(session, query.member, workspace_id) if query.member else None
    return _Filters(equal, member_ids)


def _segment_sums(
    segment: usage_rollups.Segment, group_by: str | None, filters: _Filters
) -> sa.Select[*tuple[Any, ...]]:
    """The sums of one segment, per group: a SELECT over the records or over one period's rollups."""
    table = _TABLE if segment.source == "records" else _ROLLUPS
    started = table.c.started_at_ms if segment.source == "records" else table.c.bucket_ms
    conditions: list[Any] = [table.c[name] == value for name, value in filters.equal.items()]
    if filters.member_ids is not None:
        conditions.append(table.c.member_id.in_(filters.member_ids))
    if segment.source != "records":
        conditions.append(table.c.period == segment.source)
    if segment.start_ms is not None:
        conditions.append(started >= segment.start_ms)
    if segment.end_ms is not None:
        conditions.append(started < segment.end_ms)
    sums: list[Any]
    if segment.source == "records":
        sums = [func.count().label("requests")]
        sums += [func.sum(table.c[name]).label(name) for name in usage_rollups.SUMS[1:]]
    else:
        sums = [func.sum(table.c[name]).label(name) for name in usage_rollups.SUMS]
    if group_by is not None:
        group = table.c[_GROUP_COLUMN[group_by]]
        sums.insert(0, group.label("grp"))
    statement = sa.select(*sums).where(*conditions)
    return statement if group_by is None else statement.group_by(group)


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


def extra_choices(session: Session, request_id: str) -> list[UsageRecord]:
    """The records of the extra choices an emulated n asked for on behalf of the client's request
    ``request_id`` (their ``parent_request_id``), oldest first; NotFound for an unknown request."""
    get_record(session, request_id)
    query = (
        select(UsageRecord)
        .where(col(UsageRecord.parent_request_id) == request_id)
        .order_by(col(UsageRecord.started_at_ms), col(UsageRecord.request_id))
    )
    return list(session.exec(query))


def record_out(row: UsageRecord) -> UsageRecordOut:
    fields = row.model_dump(exclude={"started_at_ms", "day", "credits_pico"})
    return UsageRecordOut(started_at=datetime.fromtimestamp(row.started_at_ms / 1000, UTC), **fields)
