"""``/v1/batches`` in OpenAI's shapes, for the workspace ext_proc asserted.

Served by the files service (control_plane/files/app.py mounts these routes): a batch's
input is a stored file and its output and errors become stored files, the identity is the
one ext_proc signs for ``/v1/files`` (the same route, port and mutual TLS: nothing new
faces Envoy), and the service already reads the store. The routes only record what the
client asks; the batch workers (worker.py) do the work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from infery_proto.identity_assertion import Identity
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from control_plane.batches import records
from control_plane.files import records as file_records
from control_plane.files.errors import FilesError
from control_plane.store.tables import Batch

if TYPE_CHECKING:
    from control_plane.files.app import FilesService

MAX_BODY_BYTES = 64 * 1024
MAX_LIST_LIMIT = 100
# OpenAI's metadata bounds: 16 pairs, keys up to 64 characters, values up to 512.
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512


def not_found(batch_id: str) -> FilesError:
    return FilesError(404, "not_found", f"No such Batch object: {batch_id}.", param="batch_id")


def install(app: FastAPI, service: FilesService, caller: Callable[..., Any]) -> None:
    """Add the Batch API's routes to the files service's ``app``; ``caller`` is its identity check."""
    who_dep = Depends(caller)

    def _object(session: Session, row: Batch) -> dict[str, Any]:
        return records.describe(session, row, int(service.clock() * 1000))

    @app.post("/v1/batches")
    async def create(request: Request, who: Identity = who_dep) -> JSONResponse:
        body = await _json_body(request)
        input_file_id, endpoint, window, metadata = _create_params(body)
        now = int(service.clock())
        stored = await run_in_threadpool(
            file_records.find, service.sessions, who.workspace_id, input_file_id, now
        )
        if stored is None:
            raise FilesError(404, "not_found", f"No such File object: {input_file_id}.", "input_file_id")
        if stored.purpose != "batch":
            raise FilesError(
                400,
                "invalid_request",
                "The input file must be uploaded with purpose 'batch'.",
                "input_file_id",
            )
        row = Batch(
            id=records.new_batch_id(service.clock()),
            workspace_id=who.workspace_id,
            member_id=who.member_id,
            key_id=who.key_id,
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window=window,
            metadata_=metadata,
            created_at=now,
            expires_at=now + records.COMPLETION_WINDOW_S[window],
        )

        def _create() -> dict[str, Any]:
            with service.sessions() as session:
                return records.batch_object(records.create(session, row), 0, 0, records.Usage())

        return JSONResponse(await run_in_threadpool(_create))

    @app.get("/v1/batches")
    async def list_batches(
        who: Identity = who_dep, limit: int = 20, after: str | None = None
    ) -> JSONResponse:
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise FilesError(400, "invalid_request", f"limit must be 1 to {MAX_LIST_LIMIT}.", "limit")

        def _page() -> tuple[list[dict[str, Any]], bool]:
            with service.sessions() as session:
                found = records.page(session, who.workspace_id, limit=limit, after=after)
                data = [_object(session, row) for row in found.rows]
            return data, found.has_more

        data, has_more = await run_in_threadpool(_page)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": has_more,
            }
        )

    @app.get("/v1/batches/{batch_id}")
    async def retrieve(batch_id: str, who: Identity = who_dep) -> JSONResponse:
        def _find() -> dict[str, Any] | None:
            with service.sessions() as session:
                row = records.find(session, who.workspace_id, batch_id)
                return None if row is None else _object(session, row)

        found = await run_in_threadpool(_find)
        if found is None:
            raise not_found(batch_id)
        return JSONResponse(found)

    @app.post("/v1/batches/{batch_id}/cancel")
    async def cancel(batch_id: str, who: Identity = who_dep) -> JSONResponse:
        def _cancel() -> dict[str, Any] | None:
            with service.sessions() as session:
                row = records.cancel(session, who.workspace_id, batch_id, int(service.clock()))
                return None if row is None else _object(session, row)

        found = await run_in_threadpool(_cancel)
        if found is None:
            raise not_found(batch_id)
        if found["status"] not in (records.CANCELLING, records.CANCELLED):
            raise FilesError(409, "conflict", f"A batch that is {found['status']} cannot be cancelled.")
        return JSONResponse(found)


async def _json_body(request: Request) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise FilesError(413, "request_too_large", f"The request is larger than {MAX_BODY_BYTES} bytes.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise FilesError(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise FilesError(400, "invalid_request", "The request body must be a JSON object.")
    return body


def _create_params(body: dict[str, Any]) -> tuple[str, str, str, dict[str, str] | None]:
    """input_file_id, endpoint, completion_window and metadata, checked as OpenAI does."""
    input_file_id = body.get("input_file_id")
    if not isinstance(input_file_id, str) or not input_file_id:
        raise FilesError(400, "invalid_request", "'input_file_id' is required.", "input_file_id")
    endpoint = body.get("endpoint")
    if endpoint not in records.ENDPOINTS:
        expected = ", ".join(records.ENDPOINTS)
        raise FilesError(400, "invalid_request", f"'endpoint' must be one of {expected}.", "endpoint")
    window = body.get("completion_window")
    if window not in records.COMPLETION_WINDOW_S:
        raise FilesError(400, "invalid_request", "'completion_window' must be '24h'.", "completion_window")
    metadata = body.get("metadata")
    if metadata is not None and not _valid_metadata(metadata):
        raise FilesError(
            400,
            "invalid_request",
            f"'metadata' must be at most {MAX_METADATA_PAIRS} string pairs (keys up to"
            f" {MAX_METADATA_KEY} characters, values up to {MAX_METADATA_VALUE}).",
            "metadata",
        )
    return input_file_id, str(endpoint), str(window), metadata


def _valid_metadata(metadata: Any) -> bool:
    return (
        isinstance(metadata, dict)
        and len(metadata) <= MAX_METADATA_PAIRS
        and all(
            isinstance(k, str)
            and isinstance(v, str)
            and len(k) <= MAX_METADATA_KEY
            and len(v) <= MAX_METADATA_VALUE
            for k, v in metadata.items()
        )
    )
