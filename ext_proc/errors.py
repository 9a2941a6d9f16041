"""OpenAI's error envelope and the gateway's stable error codes.

Clients branch on ``error.code``; every error the gateway sends, its own or a
provider's, goes through :func:`envelope` so the shape never drifts.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type(status: int) -> str:
    if status in _TYPE_BY_STATUS:
        return _TYPE_BY_STATUS[status]
    return "server_error" if status >= 500 else "invalid_request_error"


def envelope(status: int, code: str, message: str, param: str | None = None) -> bytes:
    return orjson.dumps(
        {"error": {"type": error_type(status), "code": code, "message": message, "param": param}}
    )


@dataclass(slots=True)
class GatewayError(Exception):
    """An error answered to the client in OpenAI's envelope."""

    status: int
    code: str
    message: str
    param: str | None = None
    retry_after: int | None = None

    def body(self) -> bytes:
        return envelope(self.status, self.code, self.message, self.param)


def upstream_status(status: int) -> tuple[int, str]:
    """The client-facing (status, code) for a provider's error status.

    A provider rejecting *our* credentials is the gateway's failure, not the
    caller's: it becomes 502 so clients never mistake it for a bad inf_ key.
    """
    if status == 400 or status == 422:
        return 400, "invalid_request"
    if status in (401, 403):
        return 502, "upstream_error"
    if status == 404:
        return 404, "model_not_found"
    if status == 408 or status == 504:
        return 504, "upstream_timeout"
    if status == 413:
        return 413, "request_too_large"
    if status == 429:
        return 429, "rate_limit_exceeded"
    if status in (503, 529):
        return 503, "upstream_unavailable"
    if status >= 500:
        return 502, "upstream_error"
    return status, "invalid_request"
