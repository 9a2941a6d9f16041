"""The files API's errors, in OpenAI's envelope with the gateway's stable codes.

Each code and its ``error.type`` are the data plane's (``infery_proto.wire``'s table).
Nothing else leaves this service: FastAPI's own errors and unexpected exceptions are
mapped too (``install``).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from infery_proto.wire import error_object
from starlette.exceptions import HTTPException

from control_plane.safe_errors import safe_traceback

log = logging.getLogger("infery.files")


class FilesError(Exception):
    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param


def not_found(file_id: str) -> FilesError:
    return FilesError(404, "not_found", f"No such File object: {file_id}.", param="id")


def respond(status: int, code: str, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_object(status, code, message, param), status_code=status)


def install(app: FastAPI) -> None:
    app.add_exception_handler(FilesError, _files_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)


async def _files_error(_request: Request, exc: FilesError) -> JSONResponse:
    return respond(exc.status, exc.code, exc.message, exc.param)


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "header", "body")]
    param = ".".join(loc) or None
    return respond(400, "invalid_request", f"{param}: {first.get('msg', 'invalid value')}", param)


async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, "invalid_request" if exc.status_code < 500 else "internal_error")
    return respond(exc.status_code, code, str(exc.detail))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("files request %s %s failed:\n%s", request.method, request.url.path, safe_traceback(exc))
    return respond(500, "internal_error", "The files service failed to process the request.")
