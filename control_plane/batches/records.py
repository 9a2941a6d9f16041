"""The ``batches`` rows: create, find, list and cancel, per workspace; the batch object.

Every query names the workspace: another workspace's batch id is unknown, exactly as an
id that never existed. Synchronous (SQLModel sessions); the API calls these in a thread.
The batch object's counts and credits are read from its lines (``lines.tally``), one
aggregate over the batch's index: nothing is kept twice, so nothing can disagree.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from control_plane.batches.lines import Tally
from control_plane.decimals import from_pico
from control_plane.store.tables import Batch

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


def batch_object(row: Batch, tally: Tally) -> dict[str, Any]:
    """OpenAI's ``batch`` object, plus ``credits_used`` (a decimal string: the sum over its lines)."""
    finished = row.status in FINAL
    # Lines a cancel or the window stopped are in the error file (batch_cancelled, batch_expired).
    failed = tally.failed + (tally.unfinished if row.status in (CANCELLED, EXPIRED) else 0)
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
        "request_counts": {"total": row.total, "completed": tally.completed, "failed": failed},
        "metadata": row.metadata_,
        "credits_used": from_pico(tally.credits_pico),
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
