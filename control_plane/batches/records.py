"""The ``batches`` rows: create, find, list and cancel, per workspace; the batch object.

Every query names the workspace: another workspace's batch id is unknown, exactly as an
id that never existed. Synchronous (SQLModel sessions); the API calls these in a thread.

The batch object's ``credits_used`` and ``usage`` are the sums of its lines' usage records
(:func:`usage_of`, one aggregate over their ``batch_id`` index), the records the auditor
reads: they are equal by construction, whichever worker, replay or recovery answered a
line. Its ``request_counts`` are read from its lines (``lines.tally``) while it runs, and
from the counts its finalizer kept on the row once it has ended (its lines are deleted
after the retention).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func, update
from sqlmodel import Session, col, select

from control_plane.batches import lines
from control_plane.batches.lines import Tally
from control_plane.decimals import from_pico
from control_plane.store.tables import Batch, UsageRecord

VALIDATING = "validating"
IN_PROGRESS = "in_progress"
FINALIZING = "finalizing"
COMPLETED = "completed"
FAILED = "failed"
EXPIRED = "expired"
CANCELLING = "cancelling"
CANCELLED = "cancelled"
# A cancel is taken while the batch may still start lines; after that there is nothing to stop.
CANCELLABLE = (VALIDATING, IN_PROGRESS)
FINAL = (COMPLETED, FAILED, EXPIRED, CANCELLED)

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/responses", "/v1/completions")
COMPLETION_WINDOW_S = {"24h": 24 * 3600}


def new_batch_id(now: float | None = None) -> str:
    """``batch_`` + milliseconds (12 hex digits) + 64 random bits: sorted by id is sorted by creation."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"batch_{ms:012x}{secrets.token_hex(8)}"


@dataclass(frozen=True, slots=True)
class Usage:
    """The sums of a batch's usage records (credits in 10^-12 credit, as the records keep them)."""

    credits_pico: int = 0
    input_tokens: int = 0  # cached ones included, as in OpenAI's usage
    cached_tokens: int = 0
    output_tokens: int = 0  # reasoning ones included
    reasoning_tokens: int = 0

    def as_openai(self) -> dict[str, Any]:
        """OpenAI's batch ``usage`` object."""
        return {
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": self.cached_tokens},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self.input_tokens + self.output_tokens,
        }


def usage_of(session: Session, batch_id: str) -> Usage:
    """The sums of the usage records of the batch's lines: every request made for one of its
    lines (replays and refusals at no charge included, so they add nothing)."""
    total = func.coalesce
    row = session.execute(
        sa.select(
            total(func.sum(col(UsageRecord.credits_pico)), 0),
            total(func.sum(col(UsageRecord.input_tokens)), 0),
            total(func.sum(col(UsageRecord.cached_input_tokens)), 0),
            total(func.sum(col(UsageRecord.output_tokens)), 0),
            total(func.sum(col(UsageRecord.reasoning_tokens)), 0),
        ).where(col(UsageRecord.batch_id) == batch_id)
    ).one()
    return Usage(*(int(n) for n in row))


def counts(status: str, tally: Tally) -> tuple[int, int]:
    """(completed, failed) of a batch in ``status`` from its lines' tally; lines a cancel or the
    window stopped are failed (they are in the error file with batch_cancelled, batch_expired)."""
    failed = tally.failed + (tally.unfinished if status in (CANCELLED, EXPIRED) else 0)
    return tally.completed, failed


def describe(session: Session, row: Batch, now_ms: int) -> dict[str, Any]:
    """The batch object of ``row``, its counts and usage read as they stand."""
    if row.status in FINAL:
        completed, failed = row.completed_lines, row.failed_lines
    else:
        completed, failed = counts(row.status, lines.tally(session, row.id, now_ms))
    return batch_object(row, completed, failed, usage_of(session, row.id))


def batch_object(row: Batch, completed: int, failed: int, usage: Usage) -> dict[str, Any]:
    """OpenAI's ``batch`` object (``usage`` included), plus ``credits_used`` (a decimal string)."""
    finished = row.status in FINAL
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "errors": {"object": "list", "data": row.errors} if row.errors else None,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": row.status,
        # The files are named only once written: finalizing may still be writing them.
        "output_file_id": row.output_file_id if finished else None,
        "error_file_id": row.error_file_id if finished else None,
        "created_at": row.created_at,
        "in_progress_at": row.in_progress_at,
        "expires_at": row.expires_at,
        "finalizing_at": row.finalizing_at,
        "completed_at": row.completed_at,
        "failed_at": row.failed_at,
        "expired_at": row.expired_at,
        "cancelling_at": row.cancelling_at,
        "cancelled_at": row.cancelled_at,
        "request_counts": {"total": row.total, "completed": completed, "failed": failed},
        "metadata": row.metadata_,
        "usage": usage.as_openai(),
        "credits_used": from_pico(usage.credits_pico),
    }


def create(session: Session, row: Batch) -> Batch:
    session.add(row)
    session.commit()
    return row


def find(session: Session, workspace_id: str, batch_id: str) -> Batch | None:
    """The workspace's batch ``batch_id``; None for another workspace's, as for none at all."""
    return session.exec(
        select(Batch).where(col(Batch.id) == batch_id, col(Batch.workspace_id) == workspace_id)
    ).first()


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Batch]
    has_more: bool


def page(session: Session, workspace_id: str, *, limit: int, after: str | None) -> Page:
    """The workspace's batches, newest first, after the cursor id (OpenAI's list order)."""
    query = select(Batch).where(col(Batch.workspace_id) == workspace_id)
    if after:
        query = query.where(col(Batch.id) < after)
    rows = list(session.exec(query.order_by(col(Batch.id).desc()).limit(limit + 1)))
    return Page(rows[:limit], len(rows) > limit)


def cancel(session: Session, workspace_id: str, batch_id: str, now: int) -> Batch | None:
    """Move the batch to ``cancelling`` if it may still start lines; the row either way (None: unknown).

    One conditional UPDATE: a worker that moves the batch on at the same moment either
    sees ``cancelling`` or made the batch final first, never both.
    """
    session.exec(
        update(Batch)  # type: ignore[call-overload]
        .where(
            col(Batch.id) == batch_id,
            col(Batch.workspace_id) == workspace_id,
            col(Batch.status).in_(CANCELLABLE),
        )
        .values(status=CANCELLING, cancelling_at=now)
    )
    session.commit()
    return find(session, workspace_id, batch_id)


# --- the workers' side ---------------------------------------------------------------------


def active(session: Session) -> list[Batch]:
    """Batches not yet final, oldest first (what workers look at each round)."""
    return list(
        session.exec(select(Batch).where(col(Batch.status).notin_(FINAL)).order_by(col(Batch.id)))  # type: ignore[attr-defined]
    )


def runnable(session: Session, now: int) -> list[Batch]:
    """Batches whose lines may be sent now: in progress and within their window, oldest first."""
    return list(
        session.exec(
            select(Batch)
            .where(col(Batch.status) == IN_PROGRESS, col(Batch.expires_at) > now)
            .order_by(col(Batch.id))
        )
    )


def take(session: Session, batch_id: str, status: str, owner: str, now_ms: int, lease_ms: int) -> bool:
    """Make ``owner`` the one worker validating or finalizing the batch, if it is still ``status``
    and no other worker's lease runs; whether it did. Commits."""
    result = session.exec(
        update(Batch)  # type: ignore[call-overload]
        .where(col(Batch.id) == batch_id, col(Batch.status) == status, col(Batch.lease_until_ms) < now_ms)
        .values(lease_owner=owner, lease_until_ms=now_ms + lease_ms)
    )
    session.commit()
    return bool(result.rowcount)


def move(session: Session, batch_id: str, owner: str, expected: str, **values: Any) -> bool:
    """Write ``values`` to the batch ``owner`` holds if it is still ``expected`` (a cancel may have
    come meanwhile: then nothing is written); whether it was. Commits."""
    result = session.exec(
        update(Batch)  # type: ignore[call-overload]
        .where(col(Batch.id) == batch_id, col(Batch.lease_owner) == owner, col(Batch.status) == expected)
        .values(**values)
    )
    session.commit()
    return bool(result.rowcount)


def get(session: Session, batch_id: str) -> Batch | None:
    return session.get(Batch, batch_id)


def due_for_sweeping(session: Session, ended_before: int, limit: int) -> list[str]:
    """Ids of batches that ended before ``ended_before`` whose lines are still kept, oldest first."""
    return list(
        session.exec(
            select(Batch.id)
            .where(col(Batch.lines_swept).is_(False), col(Batch.ended_at) < ended_before)
            .order_by(col(Batch.ended_at))
            .limit(limit)
        )
    )


def swept(session: Session, batch_id: str) -> None:
    """The batch's lines are all deleted. Commits."""
    session.exec(
        update(Batch).where(col(Batch.id) == batch_id).values(lines_swept=True)  # type: ignore[call-overload]
    )
    session.commit()
