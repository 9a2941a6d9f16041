"""Every admin API error leaves in OpenAI's envelope, FastAPI's own ones included.

Schema violations (wrong type, missing field, bad pattern) are 422 `invalid_request`
with `param` naming the field; well-formed input that contradicts the stored state
(unknown provider, self-fallback) is 400 `invalid_request`. Every other code is answered
with its status in infery_proto.wire's table, the data plane's.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from infery_proto.wire import ERRORS
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException

from control_plane.errors import ControlPlaneError, envelope
from control_plane.safe_errors import describe, safe_traceback

log = logging.getLogger(__name__)

_CODE_BY_STATUS = {401: "invalid_admin_token", 404: "not_found", 405: "method_not_allowed"}
_LOCATIONS = ("body", "query", "path", "header")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ControlPlaneError, _control_plane_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(IntegrityError, _integrity_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)


def _respond(code: str, message: str, param: str | None = None, status: int | None = None) -> JSONResponse:
    """``code``'s envelope, with its table status unless ``status`` says otherwise."""
    status = ERRORS[code].status if status is None else status
    return JSONResponse(envelope(status, code, message, param), status_code=status)


async def _control_plane_error(_request: Request, exc: ControlPlaneError) -> JSONResponse:
    response = _respond(exc.code, exc.message, exc.param, exc.status)
    if exc.status == 401:
        response.headers["www-authenticate"] = "Bearer"
    return response


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first: dict[str, Any] = errors[0] if errors else {}
    if first.get("type") == "json_invalid":
        return _respond("invalid_json", "the request body is not valid JSON")
    param = _param(first.get("loc", ()))
    message = str(first.get("msg", "invalid request"))
    if param:
        message = f"{param}: {message}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    return _respond("invalid_request", message, param, status=422)  # FastAPI's status for a schema error


def _param(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = list(loc)
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    # A failed union member adds its type name ("function-after[...]"), not a field: drop it.
    named = [str(p) for p in parts if isinstance(p, int) or ("[" not in str(p) and "(" not in str(p))]
    return ".".join(named) or None


async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
    code = _CODE_BY_STATUS.get(
        exc.status_code, "invalid_request" if exc.status_code < 500 else "internal_error"
    )
    response = _respond(code, str(exc.detail), status=exc.status_code)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _integrity_error(_request: Request, exc: IntegrityError) -> JSONResponse:
    # Checks run before writing, so only a concurrent change gets here (two creates of one name).
    log.info("admin change lost a race: %s", describe(exc))
    return _respond("conflict", "the change conflicts with a concurrent change; retry")


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # Never exc_info: the database's own message can repeat the row (an api_key included).
    log.error("admin API request %s %s failed:\n%s", request.method, request.url.path, safe_traceback(exc))
    return _respond("internal_error", "internal error")
