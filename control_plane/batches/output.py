"""A finished batch's output and error files, written to the files storage as they are read.

OpenAI's output lines: ``{"id", "custom_id", "response": {"status_code", "request_id",
"body"}, "error"}``. A 2xx answer goes to the output file; any other answer goes to the
error file with its response and an ``error`` taken from its body; a line never sent
goes to the error file with ``response: null`` and why (``model_not_allowed``, or
``batch_cancelled``/``batch_expired`` for the lines a cancel or the window stopped).
A file is made only when it has a line (OpenAI's ``output_file_id`` is null otherwise).

The two files' ids are chosen before anything is written (:func:`reserve`) and kept on the
batch's row, so writing them is idempotent: a finalizer that takes over from one that died
half-way writes the same files again under the same ids (rows and bytes replaced), and
removes a file the first one made that is not needed after all. No orphan, no duplicate.

Lines are read from the store a page at a time and streamed to storage: memory holds one
page, never the file.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool

from control_plane.batches import lines
from control_plane.files import records as file_records
from control_plane.files.storage import FileStorage, Writer
from control_plane.store.db import SessionFactory
from control_plane.store.tables import Batch, BatchLine, StoredFile

PAGE = 200
OUTPUT_PURPOSE = "batch_output"
UNFINISHED = {
    "cancelled": ("batch_cancelled", "The batch was cancelled before this request was sent."),
    "expired": ("batch_expired", "The batch expired before this request was sent."),
}


def line_id(batch_id: str, line_no: int) -> str:
    """``batch_req_`` + 24 hex digits, the same every time the line is written."""
    return "batch_req_" + hashlib.sha256(f"{batch_id}:{line_no}".encode()).hexdigest()[:24]


def output_line(batch_id: str, row: BatchLine, final_status: str) -> tuple[bool, bytes]:
    """(whether it goes to the output file, the JSON line with its newline)."""
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    ok = False
    if row.state == lines.DONE:
        try:
            body: Any = orjson.loads(row.response or b"null")
        except orjson.JSONDecodeError:
            body = (row.response or b"").decode("utf-8", "replace")
        response = {"status_code": row.status_code, "request_id": row.request_id, "body": body}
        ok = 200 <= row.status_code < 300
        if not ok:
            detail = body.get("error") if isinstance(body, dict) else None
            detail = detail if isinstance(detail, dict) else {}
            error = {
                "code": str(detail.get("code") or "request_failed"),
                "message": str(detail.get("message") or f"The request failed with status {row.status_code}."),
            }
    elif row.state == lines.FAILED:
        error = dict(row.error or {"code": "request_failed", "message": "The request was not sent."})
    else:
        code, message = UNFINISHED.get(final_status, ("request_not_sent", "The request was not sent."))
        error = {"code": code, "message": message}
    doc = {
        "id": line_id(batch_id, row.line_no),
        "custom_id": row.custom_id,
        "response": response,
        "error": error,
    }
    return ok, orjson.dumps(doc) + b"\n"


def reserve(now: float) -> tuple[str, str]:
    """Fresh ids for a batch's output and error files, recorded on its row before writing."""
    return file_records.new_file_id(now), file_records.new_file_id(now)


@dataclass
class _File:
    row: StoredFile
    writer: Writer
    bytes: int = 0


async def write_files(
    sessions: SessionFactory,
    storage: FileStorage,
    batch: Batch,
    final_status: str,
    clock: Callable[[], float],
) -> tuple[str | None, str | None]:
    """Write the batch's output and error files under the ids reserved on its row; the ids of those
    made (None: no line for it; a file an earlier attempt made under that id is removed)."""
    reserved = {True: batch.output_file_id, False: batch.error_file_id}
    assert reserved[True] and reserved[False], "reserve the files' ids first"
    files: dict[bool, _File] = {}
    async with contextlib.AsyncExitStack() as stack:

        async def file_for(ok: bool) -> _File:
            if ok not in files:
                row = file_records.new_row(
                    batch.workspace_id, batch.member_id, batch.key_id, clock(), file_id=reserved[ok]
                )
                await run_in_threadpool(file_records.begin, sessions, row, again=True)
                writer = await stack.enter_async_context(storage.writer(row.storage_key))
                files[ok] = _File(row, writer)
            return files[ok]

        after = 0
        while True:

            def _page(after: int = after) -> list[BatchLine]:
                with sessions() as session:
                    return lines.results(session, batch.id, after, PAGE)

            rows = await run_in_threadpool(_page)
            if not rows:
                break
            for row in rows:
                ok, data = output_line(batch.id, row, final_status)
                target = await file_for(ok)
                await target.writer.write(data)
                target.bytes += len(data)
            after = rows[-1].line_no
    ids: dict[bool, str] = {}
    for ok, made in files.items():
        kind = "output" if ok else "error"
        await run_in_threadpool(
            file_records.complete,
            sessions,
            made.row.id,
            filename=f"{batch.id}_{kind}.jsonl",
            purpose=OUTPUT_PURPOSE,
            bytes=made.bytes,
            expires_at=None,
        )
        ids[ok] = made.row.id
    for ok, file_id in reserved.items():
        if ok not in files and file_id:  # not needed: an earlier attempt's file goes
            await storage.delete(file_records.storage_key(batch.workspace_id, file_id))
            await run_in_threadpool(file_records.forget, sessions, file_id)
    return ids.get(True), ids.get(False)
