"""``/v1/files`` in OpenAI's shapes, for the workspace ext_proc asserted.

Every route first checks the identity header (:func:`caller`): signed with the files
identity key, for this very method and path, not expired. What it names is the only
workspace a request can see: another workspace's file id is ``404 not_found``, in a
list as by id, exactly as an id that never existed.

Every upload and every delete leaves one usage record, refused ones included
(control_plane/files/usage_records.py says what is recorded and why it costs 0 credits).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from infery_proto import identity_assertion
from infery_proto.identity_assertion import Identity
from infery_proto.wire import IDEMPOTENCY_KEY_HEADER, IDEMPOTENT_REPLAYED_HEADER
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from control_plane.batches import api as batches_api
from control_plane.files import idempotency, records, usage_records
from control_plane.files.errors import FilesError, install, not_found, respond
from control_plane.files.metrics import FilesMetrics
from control_plane.files.settings import MAX_EXPIRES_AFTER_S, FilesSettings
from control_plane.files.storage import FileStorage, ObjectMissing, Writer
from control_plane.files.upload_form import FormError, FormReader, TooLarge, UploadForm, boundary_of
from control_plane.safe_errors import describe
from control_plane.store.tables import StoredFile

log = logging.getLogger("infery.files")

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MAX_LIST_LIMIT = 10_000
# Room for the form around the file (boundaries, part headers, the text fields) when a
# Content-Length tells the size up front: anything larger is refused before a byte is read.
FORM_OVERHEAD_BYTES = 64 * 1024


@dataclass
class FilesService:
    """What the routes use; one per process."""

    settings: FilesSettings
    sessions: records.Sessions
    storage: FileStorage
    identity_key: bytes
    metrics: FilesMetrics = field(default_factory=FilesMetrics)
    clock: Callable[[], float] = time.time


async def caller(request: Request) -> Identity:
    """The identity ext_proc asserted for this request; 401 for anything else."""
    service: FilesService = request.app.state.files
    values = request.headers.getlist(identity_assertion.HEADER)
    path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    target = (path + b"?" + query if query else path).decode("latin-1")
    identity = (
        identity_assertion.verify(service.identity_key, values[0], request.method, target, service.clock())
        if len(values) == 1
        else None
    )
    if identity is None:
        raise FilesError(401, "invalid_identity", "This service answers requests of the gateway only.")
    return identity


Caller = Annotated[Identity, Depends(caller)]


def create_app(service: FilesService) -> FastAPI:
    app = FastAPI(title="Infery files", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.files = service
    install(app)
    settings, sessions, storage, metrics = (
        service.settings,
        service.sessions,
        service.storage,
        service.metrics,
    )

    batches_api.install(app, service, caller)  # the Batch API: its files are these (control_plane/batches/)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        """For the launcher and probes; no identity needed (nor anything told)."""
        return {"status": "ok"}

    async def _unstored(who: Identity, endpoint: str, started: float, status: int, code: str) -> None:
        """The usage record of an upload or delete that stored or freed nothing."""
        record = usage_records.record(who, endpoint, started, service.clock(), status, 0, code)
        try:
            await run_in_threadpool(usage_records.write, sessions, record)
        except Exception as exc:  # the answer stands; the store's failure is the operator's to see
            log.error("files request %s: its usage record was not stored: %s", who.request_id, describe(exc))

    @app.post("/v1/files")
    async def upload(request: Request, who: Caller) -> JSONResponse:
        started = service.clock()
        endpoint = usage_records.UPLOAD_ENDPOINT
        try:
            return await _upload(request, who, started)
        except FormError as exc:
            metrics.uploads.labels("refused").inc()
            await _unstored(who, endpoint, started, 400, "invalid_request")
            raise FilesError(400, "invalid_request", str(exc), exc.param) from None
        except TooLarge:
            metrics.uploads.labels("too_large").inc()
            await _unstored(who, endpoint, started, 413, "request_too_large")
            limit = settings.max_file_bytes
            raise FilesError(
                413, "request_too_large", f"The file is larger than this gateway accepts ({limit} bytes)."
            ) from None
        except FilesError as exc:  # the Idempotency-Key's refusals
            metrics.uploads.labels("refused").inc()
            await _unstored(who, endpoint, started, exc.status, exc.code)
            raise
        except ClientDisconnect:
            metrics.uploads.labels("failed").inc()
            await _unstored(
                who, endpoint, started, 499, "stream_interrupted"
            )  # as ext_proc records a client gone
            return respond(400, "invalid_request", "The upload was interrupted.")
        except Exception:
            metrics.uploads.labels("failed").inc()
            await _unstored(who, endpoint, started, 500, "internal_error")
            raise
        except BaseException:
            metrics.uploads.labels("failed").inc()
            raise

    async def _read_form(
        request: Request, boundary: bytes, writer: Writer, created_at: int
    ) -> tuple[UploadForm, str, int | None]:
        """The whole form read (its file to ``writer``) and validated: (form, purpose, expiry)."""
        reader = FormReader(boundary, writer, settings.max_file_bytes)
        async for chunk in request.stream():
            if chunk:
                await reader.feed(chunk)
        form = reader.finish()
        return form, *_validate(form, created_at, settings)

    async def _replay(
        request: Request, who: Identity, started: float, boundary: bytes, kept: StoredFile
    ) -> JSONResponse:
        """A retry of a stored upload: read (nothing stored), the same upload, the same file."""
        if kept.status != records.PROCESSED:
            raise idempotency.in_use()
        hashing = idempotency.HashingWriter(None)
        form, _, _ = await _read_form(request, boundary, hashing, kept.created_at)
        if idempotency.fingerprint(form, hashing.digest.hexdigest()) != kept.fingerprint:
            raise idempotency.reused()
        usage = usage_records.record(
            who, usage_records.UPLOAD_ENDPOINT, started, service.clock(), 200, 0, replay=True
        )
        await run_in_threadpool(usage_records.write, sessions, usage)
        metrics.uploads.labels("replayed").inc()
        return JSONResponse(records.file_object(kept), headers={IDEMPOTENT_REPLAYED_HEADER: "true"})

    async def _upload(request: Request, who: Identity, started: float) -> JSONResponse:
        boundary = boundary_of(request.headers.get("content-type", ""))
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > settings.max_file_bytes + FORM_OVERHEAD_BYTES:
            raise TooLarge
        now = service.clock()
        key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
        scoped = idempotency.scope(who.member_id, key) if key is not None else None
        if scoped is not None:
            kept = await run_in_threadpool(
                records.by_idempotency_key, sessions, who.workspace_id, scoped, int(now)
            )
            if kept is not None:
                return await _replay(request, who, started, boundary, kept)
        row = records.new_row(who.workspace_id, who.member_id, who.key_id, now, scoped)
        try:
            await run_in_threadpool(records.begin, sessions, row)
        except IntegrityError:  # the same key's upload began meanwhile
            raise idempotency.in_use() from None
        try:
            # Read to the end and validated inside the writer: a refusal discards the bytes.
            async with storage.writer(row.storage_key) as destination:
                # Hashed only when a retry may have to be recognised (the hash costs CPU per MB).
                hashing = idempotency.HashingWriter(destination) if scoped else None
                form, purpose, expires_at = await _read_form(
                    request, boundary, hashing or destination, row.created_at
                )
        except BaseException:
            await run_in_threadpool(records.forget, sessions, row.id)
            raise
        usage = usage_records.record(
            who, usage_records.UPLOAD_ENDPOINT, started, service.clock(), 200, form.bytes
        )
        stored = await run_in_threadpool(
            records.complete,
            sessions,
            row.id,
            usage_record=usage,
            filename=form.filename,
            purpose=purpose,
            bytes=form.bytes,
            expires_at=expires_at,
            fingerprint=idempotency.fingerprint(form, hashing.digest.hexdigest()) if hashing else None,
        )
        metrics.uploads.labels("stored").inc()
        metrics.uploaded_bytes.inc(form.bytes)
        return JSONResponse(records.file_object(stored))

    @app.get("/v1/files")
    async def list_files(
        who: Caller,
        purpose: str | None = None,
        limit: int = MAX_LIST_LIMIT,
        after: str | None = None,
        order: str = "desc",
    ) -> JSONResponse:
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise FilesError(400, "invalid_request", f"limit must be 1 to {MAX_LIST_LIMIT}.", "limit")
        if order not in ("asc", "desc"):
            raise FilesError(400, "invalid_request", "order must be 'asc' or 'desc'.", "order")
        found = await run_in_threadpool(
            lambda: records.page(
                sessions,
                who.workspace_id,
                int(service.clock()),
                purpose=purpose,
                limit=limit,
                after=after,
                ascending=order == "asc",
            )
        )
        data = [records.file_object(row) for row in found.rows]
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": found.has_more,
            }
        )

    async def _served(who: Identity, file_id: str) -> StoredFile:
        row = await run_in_threadpool(records.find, sessions, who.workspace_id, file_id, int(service.clock()))
        if row is None:
            raise not_found(file_id)
        return row

    @app.get("/v1/files/{file_id}")
    async def retrieve(file_id: str, who: Caller) -> JSONResponse:
        return JSONResponse(records.file_object(await _served(who, file_id)))

    @app.get("/v1/files/{file_id}/content")
    async def content(file_id: str, who: Caller) -> StreamingResponse:
        row = await _served(who, file_id)
        try:
            pieces = await storage.read(row.storage_key)
        except ObjectMissing:
            log.error("file %s: its bytes are missing from the storage", file_id)
            raise not_found(file_id) from None
        return StreamingResponse(
            pieces,
            media_type="application/octet-stream",
            headers={"content-length": str(row.bytes), "content-disposition": _attachment(row.filename)},
        )

    @app.delete("/v1/files/{file_id}")
    async def delete(file_id: str, who: Caller) -> JSONResponse:
        started = service.clock()
        endpoint = usage_records.DELETE_ENDPOINT
        usage = usage_records.record(who, endpoint, started, started, 200)  # its bytes: the file's
        row = await run_in_threadpool(
            records.expire_now, sessions, who.workspace_id, file_id, int(started), usage
        )
        if row is None:
            await _unstored(who, endpoint, started, 404, "not_found")
            raise not_found(file_id)
        # Gone for the workspace already; should this fail half-way, the sweeper finishes it.
        await storage.delete(row.storage_key)
        await run_in_threadpool(records.forget, sessions, file_id)
        metrics.deleted.labels("deleted").inc()
        return JSONResponse({"id": file_id, "object": "file", "deleted": True})

    return app


def _validate(form: UploadForm, created_at: int, settings: FilesSettings) -> tuple[str, int | None]:
    """The form's purpose and expiry (unix seconds, or None), or the FormError that refuses it."""
    if form.filename is None:
        raise FormError("'file' is required: the file to upload, as a multipart file part.", "file")
    purpose = form.fields.get("purpose", "")
    if not purpose:
        raise FormError("'purpose' is required.", "purpose")
    if purpose not in PURPOSES:
        raise FormError(f"Invalid purpose '{purpose}': expected one of {', '.join(PURPOSES)}.", "purpose")
    anchor = form.fields.get("expires_after[anchor]")
    seconds = form.fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return purpose, None
    if anchor != "created_at":
        raise FormError("expires_after[anchor] must be 'created_at'.", "expires_after.anchor")
    low, high = settings.files_min_expires_after_s, MAX_EXPIRES_AFTER_S
    if seconds is None or not seconds.isdigit() or not low <= int(seconds) <= high:
        raise FormError(f"expires_after[seconds] must be {low} to {high}.", "expires_after.seconds")
    return purpose, created_at + int(seconds)


def _attachment(filename: str) -> str:
    """A Content-Disposition that survives any file name (RFC 6266's filename*)."""
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "_").replace("\\", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
