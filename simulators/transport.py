"""Connection-level faults (reset, cut) that ASGI itself cannot express, and the uvicorn
configuration that makes them possible.

ASGI has no "drop this connection" message, so the server runs uvicorn's httptools protocol
subclassed only to remember each connection's transport, keyed by the addresses uvicorn also
puts in the request scope. Served any other way, the helpers raise instead: uvicorn then closes
a started response's connection, but answers 500 where a reset was scripted.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import MutableMapping
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_transports: dict[tuple[Any, ...], asyncio.Transport] = {}


def _key(peer: Any, local: Any) -> tuple[Any, ...] | None:
    if not peer or not local:
        return None
    return (str(peer[0]), int(peer[1]), str(local[0]), int(local[1]))


class TrackingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        key = _key(transport.get_extra_info("peername"), transport.get_extra_info("sockname"))
        if key:
            _transports[key] = transport

    def connection_lost(self, exc: Exception | None) -> None:
        key = _key(self.transport.get_extra_info("peername"), self.transport.get_extra_info("sockname"))
        if key:
            _transports.pop(key, None)
        super().connection_lost(exc)


class ConnectionDropped(Exception):
    """Raised when no transport is known: the server closes the connection on an app error."""


def _transport_for(scope: MutableMapping[str, Any]) -> asyncio.Transport | None:
    key = _key(scope.get("client"), scope.get("server"))
    return _transports.get(key) if key else None


def reset(scope: MutableMapping[str, Any]) -> None:
    """Abort with a TCP RST (SO_LINGER 0): the client sees 'connection reset', no response."""
    transport = _transport_for(scope)
    if transport is None:
        raise ConnectionDropped("reset")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def close(scope: MutableMapping[str, Any]) -> None:
    """Close after flushing what was already written: the body the client got stays truncated."""
    transport = _transport_for(scope)
    if transport is None:
        raise ConnectionDropped("close")
    transport.close()


def uvicorn_config(
    application: ASGIApp, *, host: str, port: int, log_level: str = "warning"
) -> uvicorn.Config:
    """How a simulator must be served (also for in-process use): uvloop, httptools, tracked connections."""
    return uvicorn.Config(
        application,
        host=host,
        port=port,
        loop="uvloop",
        http=TrackingHttpToolsProtocol,
        lifespan="off",
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=1,
        # Proxies pool upstream connections for long; closing idle ones after uvicorn's default 5 s
        # races with a request sent on them (a spurious reset). Real providers keep them longer too.
        timeout_keep_alive=600,
    )
