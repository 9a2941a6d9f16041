"""OpenAI's error envelope and the gateway's stable error codes.

Clients branch on ``error.code``; every error the gateway sends, its own or a
provider's, goes through :func:`envelope` so the shape never drifts. The codes, their
statuses and OpenAI types are infery_proto.wire's table, shared with the control plane
and Envoy's local replies.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from infery_proto.wire import error_object


def envelope(status: int, code: str, message: str, param: str | None = None) -> bytes:
    """The envelope's bytes; its ``type`` is the code's in infery_proto.wire ``ERRORS``."""
    return orjson.dumps(error_object(status, code, message, param))


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
