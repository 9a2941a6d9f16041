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

A batch that ends before all its lines were answered (cancelled, expired) is *sealed* by
its finalizer (:func:`seal`): every unfinished line no live worker holds becomes the
finalizer's, so no worker claims one after the batch's files are written; the ones some
worker may have sent (``attempts`` > 0: :func:`to_recover`) are then asked about
(control_plane/batches/worker.py). Lines of batches that ended longer ago than the
retention are deleted a chunk at a time (:func:`sweep_some`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import and_, case, delete, func, insert, or_, update
from sqlmodel import Session, col, select

from control_plane.store.tables import BatchLine, UsageRecord

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
    """A batch's lines by outcome: what the batch object's counts say while it runs."""

    completed: int = 0  # answered 2xx
    failed: int = 0  # answered otherwise, or never sent
    unfinished: int = 0  # pending or leased
    in_flight: int = 0  # leased, lease not over


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
        ).where(col(BatchLine.batch_id) == batch_id)
    ).one()
    return Tally(int(row[0]), int(row[1]), int(row[2]), int(row[3]))


# -- a batch ending before all its lines were answered ----------------------------------------


def seal(session: Session, batch_id: str, owner: str, now_ms: int, lease_ms: int) -> int:
    """Lease every unfinished line of the batch that no other live worker holds to ``owner``
    (pending ones, lapsed leases, and ``owner``'s own, renewed); how many it holds. Commits.

    Once sealed, no claim can take one of them (their lease is live), whatever the claimer's
    view of the batch's status or clock: nothing starts behind a finalizer. Lines another
    worker holds with a live lease are left to it (:func:`held_elsewhere`).
    """
    state, lease_owner = col(BatchLine.state), col(BatchLine.lease_owner)
    result = session.exec(
        update(BatchLine)  # type: ignore[call-overload]
        .where(
            col(BatchLine.batch_id) == batch_id,
            or_(
                state == PENDING,
                and_(state == LEASED, or_(col(BatchLine.lease_until_ms) < now_ms, lease_owner == owner)),
            ),
        )
        .values(state=LEASED, lease_owner=owner, lease_until_ms=now_ms + lease_ms)
    )
    session.commit()
    return int(result.rowcount)


def renew_held(session: Session, batch_id: str, owner: str, until_ms: int) -> None:
    """Extend every lease ``owner`` holds on the batch's lines (a finalizer's sealed lines); commits."""
    session.exec(
        update(BatchLine)  # type: ignore[call-overload]
        .where(
            col(BatchLine.batch_id) == batch_id,
            col(BatchLine.state) == LEASED,
            col(BatchLine.lease_owner) == owner,
        )
        .values(lease_until_ms=until_ms)
    )
    session.commit()


def held_elsewhere(session: Session, batch_id: str, owner: str, now_ms: int) -> int:
    """The batch's lines another worker holds with a live lease (in flight: they finish first)."""
    return int(
        session.execute(
            sa.select(func.count()).where(
                col(BatchLine.batch_id) == batch_id,
                col(BatchLine.state) == LEASED,
                col(BatchLine.lease_owner) != owner,
                col(BatchLine.lease_until_ms) >= now_ms,
            )
        ).scalar_one()
    )


def to_recover(session: Session, batch_id: str, owner: str) -> list[Claimed]:
    """The sealed lines ``owner`` holds that a worker may have sent (claimed at least once)."""
    rows = session.execute(
        sa.select(
            col(BatchLine.id),
            col(BatchLine.batch_id),
            col(BatchLine.line_no),
            col(BatchLine.custom_id),
            col(BatchLine.request),
            col(BatchLine.attempts),
        )
        .where(
            col(BatchLine.batch_id) == batch_id,
            col(BatchLine.state) == LEASED,
            col(BatchLine.lease_owner) == owner,
            col(BatchLine.attempts) > 0,
        )
        .order_by(col(BatchLine.id))
    ).all()
    return [Claimed(*row) for row in rows]


def answered_without_record(session: Session, batch_id: str) -> int:
    """The batch's answered lines whose request's usage record has not reached the store yet."""
    recorded = sa.select(col(UsageRecord.request_id)).where(
        col(UsageRecord.request_id) == col(BatchLine.request_id)
    )
    return int(
        session.execute(
            sa.select(func.count()).where(
                col(BatchLine.batch_id) == batch_id,
                col(BatchLine.state) == DONE,
                col(BatchLine.request_id) != "",
                ~recorded.exists(),
            )
        ).scalar_one()
    )


def sweep_some(session: Session, batch_id: str, limit: int) -> int:
    """Delete up to ``limit`` of the batch's lines, in one short transaction; how many. Commits."""
    some = sa.select(col(BatchLine.id)).where(col(BatchLine.batch_id) == batch_id).limit(limit)
    result = session.exec(
        delete(BatchLine).where(col(BatchLine.id).in_(some.scalar_subquery()))  # type: ignore[call-overload]
    )
    session.commit()
    return int(result.rowcount)


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
