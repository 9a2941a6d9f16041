"""The usage records of the files API: one per upload and one per delete, written by the files service.

ext_proc sees only a files request's headers (ext_proc/endpoints/files.py), so it cannot know
whether a file was stored, nor its size: the files service does, and records it under the
request id ext_proc asserted (one record per request id, as for every other endpoint), in the
usage table every breakdown reads (``GET /admin/v1/usage?group_by=endpoint``).

- An upload is recorded on ``/v1/files`` with the file's bytes (0 when refused: a 400, a 413,
  an interrupted upload, 499 ``stream_interrupted``), a delete on ``/v1/files/{file_id}`` (the
  route, not the id: one row per kind in a breakdown) with the bytes it freed. What is stored
  at any moment is the uploads' bytes less the deletes'. A file that expires is a delete too:
  the sweeper records it when it frees the bytes (:func:`expiry`), as its owner's, under the
  request id ``expired-<file id>`` (no client asked; one per file), in the transaction that
  drops the row. A client's delete the sweeper finishes is not recorded again.
- Credits: 0. The gateway's prices are a model's (tokens, images, characters, seconds of
  audio), and a stored file has no model and no provider; a price for storage would be one per
  byte and per day kept, which a record at upload time cannot carry. The bytes are recorded so
  that an operator can bill storage outside the gateway meanwhile.
- Reads (list, retrieve, content) are not recorded: they change nothing that is kept.

A successful upload or delete is recorded in the same transaction that makes the file served
or takes it out of service (control_plane/files/records.py), so no file is stored unrecorded.
"""

from __future__ import annotations

from infery_proto.identity_assertion import Identity
from infery_proto.v1 import usage_pb2

from control_plane.files.records import Sessions
from control_plane.resources import usage
from control_plane.store.tables import StoredFile

UPLOAD_ENDPOINT = "/v1/files"
DELETE_ENDPOINT = "/v1/files/{file_id}"


def record(
    who: Identity,
    endpoint: str,
    started: float,
    ended: float,
    status: int,
    file_bytes: int = 0,
    error_code: str = "",
    replay: bool = False,
) -> usage_pb2.UsageRecord:
    """The usage record of one files request by ``who``, from ``started`` to ``ended`` (unix seconds)."""
    return usage_pb2.UsageRecord(
        request_id=who.request_id,
        started_at_ms=int(started * 1000),
        workspace_id=who.workspace_id,
        member_id=who.member_id,
        key_id=who.key_id,
        endpoint=endpoint,
        status=status,
        credits="0",
        latency_ms=max(0.0, ended - started) * 1000,
        error_code=error_code,
        file_bytes=file_bytes,
        idempotent_replay=replay,
    )


def expiry(row: StoredFile, now: float) -> usage_pb2.UsageRecord:
    """The record of an expired file the sweeper deletes at ``now``: a delete of its owner's that
    frees its bytes."""
    who = Identity(f"expired-{row.id}", row.workspace_id, row.member_id, row.key_id)
    return record(who, DELETE_ENDPOINT, now, now, 200, row.bytes)


def write(sessions: Sessions, rec: usage_pb2.UsageRecord) -> None:
    """Stores ``rec`` on its own: a request that failed, with nothing else to commit."""
    with sessions() as session:
        usage.store(session, [rec])  # once per request id
        session.commit()
