"""The contract between the generic server and one simulated provider."""

from __future__ import annotations

import hmac
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from simulators import forms
from simulators.conformance import Kit
from simulators.control import Step
from simulators.forms import Form
from simulators.replies import JsonReply, Reply


class ApiError(Exception):
    """An error the provider would answer; each provider renders it in its own shape."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        code: str | None = None,
        param: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message or str(status))
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.extra = extra or {}


@dataclass
class Call:
    """One API request as a handler sees it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # parsed JSON, or None when the body is not JSON
    is_json: bool
    path_params: dict[str, str]
    base_url: str  # server root, no trailing slash
    step: Step | None = None
    raw: bytes = b""  # the body as received (multipart forms are read from it)

    @property
    def usage_override(self) -> dict[str, Any] | None:
        return self.step.usage if self.step else None


Handler = Callable[[Call], Reply]


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Handler


@dataclass
class Provider:
    """Base for one provider kind. Subclasses fill in auth, errors and endpoints."""

    kit: Kit | None = None
    api_key: str | None = None
    kind: ClassVar[str] = ""
    sse_media_type: ClassVar[str] = "text/event-stream"

    def endpoints(self) -> list[Endpoint]:
        raise NotImplementedError

    def authenticate(self, call: Call) -> None:
        """Raise the provider's auth error when the key is missing or wrong."""
        raise NotImplementedError

    def error_reply(self, error: ApiError) -> JsonReply:
        raise NotImplementedError

    def not_found(self, call: Call) -> ApiError:
        raise NotImplementedError

    def invalid_json(self) -> ApiError:
        raise NotImplementedError

    def response_headers(self) -> dict[str, str]:
        """Headers the real API puts on every answer (request ids and the like)."""
        return {}

    def key_matches(self, presented: str | None) -> bool:
        """Constant-time comparison; with no configured key any non-empty key is accepted."""
        if not presented:
            return False
        if self.api_key is None:
            return True
        return hmac.compare_digest(presented.encode(), self.api_key.encode())

    def require_form(self, call: Call) -> Form:
        """The multipart form of an upload endpoint (OpenAI's audio), or the provider's 400."""
        try:
            return forms.parse(call.headers.get("content-type", ""), call.raw)
        except forms.FormProblem as problem:
            raise ApiError(400, f"Could not parse multipart form: {problem}") from None

    def require_json(self, call: Call) -> dict[str, Any]:
        if not call.is_json or not isinstance(call.body, dict):
            raise self.invalid_json()
        return call.body


def merge_usage(usage: dict[str, Any], override: dict[str, Any] | None, total: tuple[str, ...] = ()) -> None:
    """Apply a scripted usage override in place; `total` = (total_key, *parts) is recomputed
    unless the override sets it itself."""
    if not override:
        return
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(usage.get(key), dict):
            merge_usage(usage[key], value)
        else:
            usage[key] = value
    if total and total[0] not in override:
        parts = [usage.get(k) or 0 for k in total[1:]]
        # A test scripting a count a provider cannot mean ("abc", -1e12) gets it sent as is.
        usage[total[0]] = sum(parts) if all(isinstance(p, int | float) for p in parts) else None


def new_id() -> str:
    """32 random hex digits for response ids (not secrets: uuid4's os.urandom is slower)."""
    return f"{random.getrandbits(128):032x}"
