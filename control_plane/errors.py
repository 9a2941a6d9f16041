"""Errors of the control plane's operations, shaped like OpenAI's error envelope.

The admin API answers them as `{"error": {...}}`; the config file loader reports them
with the resource they came from. Codes are stable, messages are for humans.
"""

from __future__ import annotations

from typing import Any

from infery_proto.wire import ERRORS, error_object


def envelope(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """The envelope the data plane sends too: its ``type`` is the code's in infery_proto.wire."""
    return error_object(status, code, message, param)


class ControlPlaneError(Exception):
    """An admin API error; its status is its code's in infery_proto.wire ``ERRORS`` (a subclass
    with a code outside the table fails at import)."""

    code = "invalid_request"
    status = ERRORS[code].status

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.status = ERRORS[cls.code].status

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def envelope(self) -> dict[str, Any]:
        return envelope(self.status, self.code, self.message, self.param)


class InvalidRequest(ControlPlaneError):
    """Well-formed input that refers to something missing or contradicts the stored state."""


class NotFound(ControlPlaneError):
    code = "not_found"


class AlreadyExists(ControlPlaneError):
    code = "already_exists"


class InUse(ControlPlaneError):
    """Deleting this would leave another resource pointing at nothing."""

    code = "in_use"


class Unauthorized(ControlPlaneError):
    code = "invalid_admin_token"
