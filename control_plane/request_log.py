"""The control plane's logs as JSON lines, and one line per admin API request.

A request line says who asked what and how it went: a request id (also returned in
``x-request-id``), the method, the route *template* (``/admin/v1/workspaces/{name}/keys``:
never a key id), the status, the duration and, where the route has one, the workspace.
Nothing else: no header (the admin token), no query string, no body (provider keys, key
secrets). Uvicorn's own access log is off; this replaces it. Scrapes of ``/metrics`` and
the probes are logged at DEBUG only: they come every few seconds.

Exceptions are logged through :func:`control_plane.safe_errors.safe_traceback` in both
formats: a database error's text may repeat the row it refused, provider key included.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

from infery_proto import logs
from pythonjsonlogger.json import JsonFormatter
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.metrics import route_template
from control_plane.safe_errors import SafeFormatter, safe_traceback

log = logging.getLogger("infery.admin_requests")

_QUIET_ROUTES = frozenset({"/metrics", "/healthz", "/readyz"})
_WORKSPACE_ROUTES = "/admin/v1/workspaces/{name}"
_USAGE_ROUTE = "/admin/v1/usage"  # its workspace is the `workspace` query parameter


class SafeJsonFormatter(JsonFormatter):
    """JSON lines whose exceptions go through :func:`safe_traceback`, as :class:`SafeFormatter`'s do."""

    def formatException(self, ei: Any) -> str:
        _type, exc, _tb = ei
        return safe_traceback(exc) if isinstance(exc, BaseException) else str(super().formatException(ei))


def configure_logging(level: str, log_format: str) -> None:
    """The process's logging (infery_proto.logs), with safe exceptions in either format."""
    logs.configure(level, log_format, SafeJsonFormatter, SafeFormatter)


class RequestLog:
    """ASGI middleware: one log line per request, and its id in the ``x-request-id`` response header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        started = time.perf_counter()
        status = 500  # unless a response starts

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("x-request-id", request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = route_template(scope)  # the router filled the scope in place
            fields: dict[str, Any] = {
                "request_id": request_id,
                "method": scope["method"],
                "route": route,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            if route.startswith(_WORKSPACE_ROUTES):
                fields["workspace"] = str(scope.get("path_params", {}).get("name", ""))
            elif route == _USAGE_ROUTE:
                query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                fields["workspace"] = query.get("workspace", [""])[0]
            log.log(logging.DEBUG if route in _QUIET_ROUTES else logging.INFO, "request", extra=fields)
