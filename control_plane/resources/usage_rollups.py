"""Hourly and daily usage sums: kept at ingestion, and the plan that reads a report from them.

A usage report over 30 days would otherwise sum every record in the range (10^7 of them at
scale). The rollups hold, per hour and per UTC day, one row per workspace, key, member, model
and endpoint, with the same sums a report returns. They are written in the transaction that
stores the records, from the records that transaction actually inserted, so a redelivered
batch is counted once in both places and a report never sees one without the other.

A report's time range is split into whole days (daily rollups), the whole hours around them
(hourly rollups) and the partial hours at the edges (the records themselves), so every answer
is the exact sum of the records in the range, whatever its bounds; only the cost differs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from control_plane.store import bulk_sql
from control_plane.store.tables import UsageRollup

HOUR_MS = 3_600_000
DAY_MS = 86_400_000

# What a rollup needs of a record, in this order (``usage._row``'s column names).
FIELDS = (
    "started_at_ms", "day", "workspace_id", "key_id", "member_id", "model_used", "endpoint",
    "input_tokens", "cached_input_tokens", "output_tokens", "credits_pico", "file_bytes",
)  # fmt: skip
DIMENSIONS = ("workspace_id", "key_id", "member_id", "model_used", "endpoint")
SUMS = ("requests", "input_tokens", "cached_input_tokens", "output_tokens", "credits_pico", "file_bytes")
_TABLE = UsageRollup.__table__  # type: ignore[attr-defined]
if tuple(c.name for c in _TABLE.columns) != ("period", "bucket_ms", *DIMENSIONS, "day", *SUMS):
    raise RuntimeError("usage_rollups' columns are not in the order add() writes them")

Source = Literal["records", "hour", "day"]


# --- ingestion ---------------------------------------------------------------------------


def add(connection: sa.Connection, records: Iterable[tuple[Any, ...]]) -> None:
    """Add records (tuples in ``FIELDS`` order, each new to the store) to their hour and day.

    The batch is summed here first (a batch from one gateway touches few distinct rows), then
    each sum is an upsert that adds to what is stored. Rows are written in key order so two
    concurrent batches lock the rows they share in the same order (no deadlock on PostgreSQL).
    """
    sums: dict[tuple[Any, ...], list[Any]] = {}
    for (
        started,
        day,
        workspace,
        key,
        member,
        model,
        endpoint,
        inputs,
        cached,
        outputs,
        pico,
        file_bytes,
    ) in records:
        dimensions = (workspace, key, member, model, endpoint)
        for period, bucket in (("hour", started - started % HOUR_MS), ("day", started - started % DAY_MS)):
            row = sums.get((period, bucket, *dimensions))
            if row is None:
                sums[(period, bucket, *dimensions)] = [day, 1, inputs, cached, outputs, pico, file_bytes]
            else:
                row[1] += 1
                row[2] += inputs
                row[3] += cached
                row[4] += outputs
                row[5] += pico
                row[6] += file_bytes
    bulk_sql.upsert_adding(connection, _TABLE, [(*key, *sums[key]) for key in sorted(sums)], SUMS)


# --- reading -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """Part of a report's time range and where its sums come from; None is unbounded."""

    source: Source
    start_ms: int | None  # inclusive
    end_ms: int | None  # exclusive


def plan(start_ms: int | None, end_ms: int | None) -> list[Segment]:
    """Split [start, end) into record edges, whole hours and whole days, covering it exactly once."""
    if start_ms is not None and end_ms is not None and start_ms >= end_ms:
        return []
    hours_start = None if start_ms is None else _ceil(start_ms, HOUR_MS)
    hours_end = None if end_ms is None else _floor(end_ms, HOUR_MS)
    if hours_start is not None and hours_end is not None and hours_start >= hours_end:
        return [Segment("records", start_ms, end_ms)]  # no whole hour inside
    segments = []
    if start_ms is not None and hours_start is not None and start_ms < hours_start:
        segments.append(Segment("records", start_ms, hours_start))
    if end_ms is not None and hours_end is not None and hours_end < end_ms:
        segments.append(Segment("records", hours_end, end_ms))
    days_start = None if hours_start is None else _ceil(hours_start, DAY_MS)
    days_end = None if hours_end is None else _floor(hours_end, DAY_MS)
    if days_start is not None and days_end is not None and days_start >= days_end:
        segments.append(Segment("hour", hours_start, hours_end))  # no whole day inside
        return segments
    if hours_start is not None and days_start is not None and hours_start < days_start:
        segments.append(Segment("hour", hours_start, days_start))
    if hours_end is not None and days_end is not None and days_end < hours_end:
        segments.append(Segment("hour", days_end, hours_end))
    segments.append(Segment("day", days_start, days_end))
    return segments


def _floor(value: int, step: int) -> int:
    return value // step * step


def _ceil(value: int, step: int) -> int:
    return -(-value // step) * step
