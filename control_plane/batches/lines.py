"""The ``batch_lines`` rows: how workers claim, keep, finish and give back the lines of a batch.

A line is ``pending`` (to send, not before ``not_before_ms``), ``leased`` to one worker
until ``lease_until_ms``, ``done`` (answered) or ``failed`` (never sent). Claiming is one
statement, so two workers never hold the same line:

- PostgreSQL: ``UPDATE ... WHERE id IN (SELECT id ... FOR UPDATE SKIP LOCKED)``: each
  worker locks the rows it picks and skips the rows another is picking, no waiting;
- SQLite: the same UPDATE, where ``FOR UPDATE`` does not exist and is not needed: SQLite
  runs one writing statement at a time, and the outer WHERE repeats the condition.

A worker that dies holds its lines only until their lease ends; then any worker takes
them again. It may have sent a line already: the line's idempotency key (ext_proc's,
derived from the batch id and ``custom_id``) makes the second sending a replay of the
first answer, never a second charge. Every write names the owner: a worker whose lease
was taken over cannot overwrite the new owner's result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import and_, case, delete, func, insert, or_, update
from sqlmodel import Session, col, select

from control_plane.store.tables import BatchLine

PENDING, LEASED, DONE, FAILED = "pending", "leased", "done", "failed"
INSERT_CHUNK = 500


@dataclass(frozen=True, slots=True)
class NewLine:
    line_no: int
    custom_id: str
    request: bytes
    error: dict[str, str] | None = None  # set: the line is never sent (it goes to the error file)


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    batch_id: str
    line_no: int
    custom_id: str
    request: bytes
    attempts: int


@dataclass(frozen=True, slots=True)
class Tally:
    """A batch's lines by outcome: what the batch object's counts and credits say."""

    completed: int = 0  # answered 2xx
    failed: int = 0  # answered otherwise, or never sent
    unfinished: int = 0  # pending or leased
    in_flight: int = 0  # leased, lease not over
    credits_pico: int = 0


def insert_lines(session: Session, batch_id: str, lines: Iterable[NewLine]) -> int:
    """Add the batch's lines (in chunks; the caller commits); how many."""
    count = 0
    chunk: list[dict[str, Any]] = []
    for line in lines:
        chunk.append(
            {
                "batch_id": batch_id,
                "line_no": line.line_no,
                "custom_id": line.custom_id,
                "request": line.request,
                "state": FAILED if line.error else PENDING,
                "attempts": 0,
                "not_before_ms": 0,
                "lease_owner": "",
                "lease_until_ms": 0,
                "status_code": 0,
                "request_id": "",
                "error": line.error,
                "credits_pico": 0,
                "finished_at_ms": 0,
            }
        )
        if len(chunk) >= INSERT_CHUNK:
            session.execute(insert(BatchLine), chunk)
            count += len(chunk)
            chunk = []
    if chunk:
        session.execute(insert(BatchLine), chunk)
        count += len(chunk)
    return count


def forget_lines(session: Session, batch_id: str) -> None:
    """Drop a batch's lines (a validation taken over from a dead worker starts again)."""
    session.exec(delete(BatchLine).where(col(BatchLine.batch_id) == batch_id))  # type: ignore[call-overload]


def _claimable(now_ms: int) -> Any:
    return or_(
        and_(col(BatchLine.state) == PENDING, col(BatchLine.not_before_ms) <= now_ms),
        and_(col(BatchLine.state) == LEASED, col(BatchLine.lease_until_ms) < now_ms),
    )


def claim(
    session: Session, batch_id: str, owner: str, limit: int, now_ms: int, lease_ms: int
) -> list[Claimed]:
    """Lease up to ``limit`` of the batch's claimable lines to ``owner``, in line order; commits."""
    if limit <= 0:
        return []
    # A CTE, evaluated once: as a plain ``IN (subquery)`` PostgreSQL may run the subquery again
    # for each row it updates, and each run skips the rows the last one locked (measured: every
    # pending line claimed at once, past the LIMIT).
    picked = (
        sa.select(col(BatchLine.id))
        .where(col(BatchLine.batch_id) == batch_id, _claimable(now_ms))
        .order_by(col(BatchLine.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("picked")
    )
    statement = (
        update(BatchLine)
        .where(col(BatchLine.id).in_(sa.select(picked.c.id)), _claimable(now_ms))
        .values(
            state=LEASED,
            lease_owner=owner,
            lease_until_ms=now_ms + lease_ms,
            attempts=col(BatchLine.attempts) + 1,
        )
        .returning(
            col(BatchLine.id),
            col(BatchLine.batch_id),
            col(BatchLine.line_no),
            col(BatchLine.custom_id),
            col(BatchLine.request),
            col(BatchLine.attempts),
        )
    )
    rows = [Claimed(*row) for row in session.execute(statement).all()]
    session.commit()
    return sorted(rows, key=lambda line: line.id)


def renew(session: Session, owner: str, ids: Sequence[int], until_ms: int) -> None:
    """Extend the leases ``owner`` still holds on ``ids`` (lines still in flight); commits."""
    if not ids:
        return
    session.exec(
        update(BatchLine)  # type: ignore[call-overload]
        .where(
            col(BatchLine.id).in_(ids), col(BatchLine.state) == LEASED, col(BatchLine.lease_owner) == owner
        )
        .values(lease_until_ms=until_ms)
    )
    session.commit()


def finish(
    session: Session,
    line_id: int,
    owner: str,
    *,
    status_code: int,
    request_id: str,
    response: bytes,
    credits_pico: int,
    now_ms: int,
) -> bool:
    """Record the line's answer if ``owner`` still holds it; whether it did. Commits."""
    result = session.exec(
        update(BatchLine)  # type: ignore[call-overload]
        .where(
            col(BatchLine.id) == line_id, col(BatchLine.state) == LEASED, col(BatchLine.lease_owner) == owner
        )
        .values(
            state=DONE,
            status_code=status_code,
            request_id=request_id,
            response=response,
            credits_pico=credits_pico,
            finished_at_ms=now_ms,
            lease_owner="",
        )
    )
    session.commit()
    return bool(result.rowcount)


def retry_later(session: Session, line_id: int, owner: str, not_before_ms: int) -> None:
    """Give the line back, to be sent again from ``not_before_ms`` (a 429, a 5xx, a lost connection)."""
    session.exec(
        update(BatchLine)  # type: ignore[call-overload]
        .where(
            col(BatchLine.id) == line_id, col(BatchLine.state) == LEASED, col(BatchLine.lease_owner) == owner
        )
        .values(state=PENDING, not_before_ms=not_before_ms, lease_owner="", lease_until_ms=0)
    )
    session.commit()


def tally(session: Session, batch_id: str, now_ms: int) -> Tally:
    """The batch's lines by outcome, in one aggregate over its index."""
    state, code = col(BatchLine.state), col(BatchLine.status_code)
    ok = and_(state == DONE, code >= 200, code < 300)
    row = session.execute(
        sa.select(
            func.count(case((ok, 1))),
            func.count(case((or_(state == FAILED, and_(state == DONE, ~ok)), 1))),
            func.count(case((state.in_((PENDING, LEASED)), 1))),
            func.count(case((and_(state == LEASED, col(BatchLine.lease_until_ms) >= now_ms), 1))),
            func.coalesce(func.sum(col(BatchLine.credits_pico)), 0),
        ).where(col(BatchLine.batch_id) == batch_id)
    ).one()
    return Tally(int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]))


def tallies(session: Session, batch_ids: Sequence[str], now_ms: int) -> dict[str, Tally]:
    return {batch_id: tally(session, batch_id, now_ms) for batch_id in batch_ids}


def results(session: Session, batch_id: str, after_line_no: int, limit: int) -> list[BatchLine]:
    """The batch's lines after ``after_line_no``, in line order: one page of its output."""
    return list(
        session.exec(
            select(BatchLine)
            .where(col(BatchLine.batch_id) == batch_id, col(BatchLine.line_no) > after_line_no)
            .order_by(col(BatchLine.line_no))
            .limit(limit)
        )
    )
