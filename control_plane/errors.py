"""Errors of the control plane's operations, shaped like OpenAI's error envelope.

The admin API answers them as `{"error": {...}}`; the config file loader reports them
with the resource they came from. Codes are stable, messages are for humans.
"""

from __future__ import annotations

from typing import Any

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
}


def error_type(status: int) -> str:
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def envelope(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"type": error_type(status), "code": code, "message": message, "param": param}}


class ControlPlaneError(Exception):
    status = 400
    code = "invalid_request"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def envelope(self) -> dict[str, Any]:
        return envelope(self.status, self.code, self.message, self.param)


class InvalidRequest(ControlPlaneError):
    """Well-formed input that refers to something missing or contradicts the stored state."""


class NotFound(ControlPlaneError):
    status = 404
    code = "not_found"


class AlreadyExists(ControlPlaneError):
    status = 409
    code = "already_exists"


class InUse(ControlPlaneError):
    """Deleting this would leave another resource pointing at nothing."""

    status = 409
    code = "in_use"


class Unauthorized(ControlPlaneError):
    status = 401
    code = "invalid_admin_token"
