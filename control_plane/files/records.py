"""The ``stored_files`` rows: every query is scoped to one workspace and hides what is not served.

A file is served while it is ``processed`` and not expired: an expired file is gone for
its workspace from the moment ``expires_at`` passes, before the sweeper deletes its
bytes and row. Synchronous (SQLModel sessions); the service calls these in a thread.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infery_proto.v1 import usage_pb2
from sqlalchemy import delete, or_
from sqlmodel import Session, col, select

from control_plane.resources import usage
from control_plane.store.tables import StoredFile

Sessions = Callable[[], Session]
# A row's life: uploading -> processed -> (deleted: a client's delete took it out of service; the
# bytes and row follow, or the sweeper finishes the job). Expiry leaves it processed.
UPLOADING, PROCESSED, DELETED = "uploading", "processed", "deleted"
SWEEP_BATCH = 100


def new_file_id(now: float | None = None) -> str:
    """``file-`` + milliseconds (12 hex digits) + 64 random bits: sorted by id is sorted by creation."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"file-{ms:012x}{secrets.token_hex(8)}"


def storage_key(workspace_id: str, file_id: str) -> str:
    """Where a file's bytes are in the storage: under its workspace's prefix."""
    return f"{workspace_id}/{file_id}"


def new_row(
    workspace_id: str,
    member_id: str,
    key_id: str,
    now: float,
    idempotency_key: str | None = None,
    file_id: str | None = None,
) -> StoredFile:
    """A file about to be written: a fresh id (or ``file_id``, chosen beforehand), and its bytes
    under the workspace's prefix in the storage (one place for that layout, whoever writes the
    file: an upload or a batch's output)."""
    file_id = file_id or new_file_id(now)
    return StoredFile(
        id=file_id,
        workspace_id=workspace_id,
        member_id=member_id,
        key_id=key_id,
        created_at=int(now),
        storage_key=storage_key(workspace_id, file_id),
        idempotency_key=idempotency_key,
    )


def file_object(row: StoredFile) -> dict[str, Any]:
    """OpenAI's ``file`` object (``expires_at`` only when the file expires)."""
    doc: dict[str, Any] = {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": row.created_at,
        "filename": row.filename,
        "purpose": row.purpose,
        "status": "processed",
    }
    if row.expires_at is not None:
        doc["expires_at"] = row.expires_at
    return doc


def _served(workspace_id: str, now: int) -> Any:
    return (
        col(StoredFile.workspace_id) == workspace_id,
        col(StoredFile.status) == PROCESSED,
        or_(col(StoredFile.expires_at).is_(None), col(StoredFile.expires_at) > now),
    )


def begin(sessions: Sessions, row: StoredFile, *, again: bool = False) -> None:
    """Record an upload before its bytes arrive, so an interrupted one is found and swept.
    ``again``: the id may have been begun before (a batch's output file written once more by a
    finalizer that took over from a dead one): that row starts over as this one."""
    with sessions() as session:
        if again:
            session.merge(row)
        else:
            session.add(row)
        session.commit()


def complete(
    sessions: Sessions, file_id: str, usage_record: usage_pb2.UsageRecord | None = None, **fields: Any
) -> StoredFile:
    """The upload's bytes are stored: fill in what the form said and serve the file; its usage
    record, if given, in the same transaction (control_plane/files/usage_records.py)."""
    with sessions() as session:
        if usage_record is not None:
            usage.store(session, [usage_record])
        row = session.get(StoredFile, file_id)
        assert row is not None
        for name, value in fields.items():
            setattr(row, name, value)
        row.status = PROCESSED
        session.add(row)
        session.commit()
        return row


def by_idempotency_key(sessions: Sessions, workspace_id: str, key: str, now: int) -> StoredFile | None:
    """The workspace's upload under ``key`` (hashed, control_plane/files/idempotency.py), stored or
    under way; None when there is none. An expired file's key is let go here, as its file is gone."""
    with sessions() as session:
        row = session.exec(
            select(StoredFile).where(
                col(StoredFile.workspace_id) == workspace_id, col(StoredFile.idempotency_key) == key
            )
        ).first()
        if row is not None and row.expires_at is not None and row.expires_at <= now:
            row.idempotency_key = None
            session.add(row)
            session.commit()
            return None
        return row


def forget(sessions: Sessions, file_id: str, usage_record: usage_pb2.UsageRecord | None = None) -> None:
    """Drops the row of a file whose bytes are gone; ``usage_record`` (an expiry's) in the same
    transaction, so freed bytes are recorded exactly once."""
    with sessions() as session:
        session.exec(delete(StoredFile).where(col(StoredFile.id) == file_id))  # type: ignore[call-overload]
        if usage_record is not None:
            usage.store(session, [usage_record])
        session.commit()


def find(sessions: Sessions, workspace_id: str, file_id: str, now: int) -> StoredFile | None:
    """The workspace's served file ``file_id``; None for another workspace's, as for none at all."""
    with sessions() as session:
        return session.exec(
            select(StoredFile).where(col(StoredFile.id) == file_id, *_served(workspace_id, now))
        ).first()


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[StoredFile]
    has_more: bool


def page(
    sessions: Sessions,
    workspace_id: str,
    now: int,
    *,
    purpose: str | None,
    limit: int,
    after: str | None,
    ascending: bool,
) -> Page:
    """One page of the workspace's files, newest first unless ``ascending``, after the cursor id."""
    query = select(StoredFile).where(*_served(workspace_id, now))
    if purpose:
        query = query.where(col(StoredFile.purpose) == purpose)
    if after:
        query = query.where(col(StoredFile.id) > after if ascending else col(StoredFile.id) < after)
    order = col(StoredFile.id).asc() if ascending else col(StoredFile.id).desc()
    with sessions() as session:
        rows = list(session.exec(query.order_by(order).limit(limit + 1)))
    return Page(rows[:limit], len(rows) > limit)


def expire_now(
    sessions: Sessions,
    workspace_id: str,
    file_id: str,
    now: int,
    usage_record: usage_pb2.UsageRecord | None = None,
) -> StoredFile | None:
    """Take the workspace's file ``file_id`` out of service at once (it expires now); its row.

    The caller then deletes the bytes and the row; should it stop half-way, the sweeper
    finds the file expired and finishes the job. ``usage_record``, the delete's, is stored in
    the same transaction with the file's bytes (control_plane/files/usage_records.py).
    """
    with sessions() as session:
        row = session.exec(
            select(StoredFile).where(col(StoredFile.id) == file_id, *_served(workspace_id, now))
        ).first()
        if row is None:
            return None
        row.expires_at = now
        row.status = DELETED  # the sweeper, should it finish this, knows the bytes are recorded
        session.add(row)
        if usage_record is not None:
            usage_record.file_bytes = row.bytes
            usage.store(session, [usage_record])
        session.commit()
        return row


def due_for_sweeping(
    sessions: Sessions, now: int, abandoned_before: int, limit: int = SWEEP_BATCH
) -> list[StoredFile]:
    """Expired files and uploads abandoned before ``abandoned_before``, oldest first."""
    with sessions() as session:
        expired = select(StoredFile).where(col(StoredFile.expires_at) <= now).limit(limit)
        abandoned = (
            select(StoredFile)
            .where(col(StoredFile.status) == UPLOADING, col(StoredFile.created_at) < abandoned_before)
            .limit(limit)
        )
        rows = {row.id: row for row in [*session.exec(expired), *session.exec(abandoned)]}
    return sorted(rows.values(), key=lambda row: row.id)
