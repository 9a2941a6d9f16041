"""Listening (TCP, Unix socket), the method table, and running a method on each new stream."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import logging
import socket
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

from infery_proto.wire import EXT_PROC_TOKEN_HEADER

from ext_proc.h2_grpc import frames
from ext_proc.h2_grpc.connection import Connection, Headers, Requests, Stream
from ext_proc.h2_grpc.frames import GRPC_INTERNAL, GRPC_UNAUTHENTICATED, GRPC_UNIMPLEMENTED, OK_TRAILERS
from ext_proc.h2_grpc.limits import DEFAULT_LIMITS, MAX_MESSAGE, Limits

log = logging.getLogger("infery.ext_proc.h2")

# On a TCP listener every stream carries the shared token in this header (gRPC initial
# metadata); Envoy adds it to each stream it opens to ext_proc (its bootstrap).
TOKEN_HEADER = EXT_PROC_TOKEN_HEADER.encode()
UNAUTHENTICATED_MESSAGE = "missing or wrong ext_proc token"
_UNAUTHENTICATED = frames.status_trailers(GRPC_UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)

Handler = Callable[[AsyncIterator[Any]], AsyncGenerator[Any, None]]
# The request headers (gRPC metadata) of the call a handler serves, for what a handler may read
# there (a caller's trace context: ext_proc/tracing.py). Set by both servers in the call's task.
Metadata = Sequence[tuple[bytes, bytes]] | Sequence[tuple[str, str | bytes]]
CALL_METADATA: ContextVar[Metadata] = ContextVar("call_metadata", default=())


@dataclass(frozen=True, slots=True)
class Method:
    """A stream-stream method: the handler maps an iterator of requests to responses."""

    handler: Handler
    # Given ``bytes``, or a ``memoryview`` for a message of 64 KiB or more (frames.HANDOVER_SIZE):
    # protobuf's FromString reads either.
    deserialize: Callable[[bytes], Any]
    # One string, or pieces to write one after the other (a reply whose large body is kept
    # aside from the rest: ext_proc/envoy_messages.py ``Spliced``), never joined here.
    serialize: Callable[[Any], bytes | list[bytes]]
    # Served without the TCP listener's token: for a method that reveals nothing and
    # that a caller unable to send the token must reach (Envoy's health checker).
    public: bool = False
    # For a message of 64 KiB or more, a view of its own buffer (default: ``deserialize``): a
    # large body can stay in it (ext_proc/received.py) while a small message costs no more.
    deserialize_large: Callable[[memoryview], Any] | None = None


class Router:
    """The method table as one connection sees it: which handler a new stream runs, and whether it may."""

    __slots__ = ("_authenticated_headers", "_methods", "_token")

    def __init__(self, methods: dict[bytes, Method], token: bytes | None) -> None:
        self._methods = methods
        self._token = token  # None: no check (a Unix socket, guarded by its directory)
        # The last header block that carried the token. Envoy repeats one block per stream and
        # the connection serves a repeat as the same tuple: an identity check then replaces the scan.
        self._authenticated_headers: Headers | None = None

    def open(self, connection: Connection, stream: Stream, headers: Headers) -> None:
        path = next((value for name, value in headers if name == b":path"), b"")
        method = self._methods.get(path)
        if (
            self._token is not None
            and headers is not self._authenticated_headers
            and not (method is not None and method.public)
            and not self._authenticated(headers)
        ):
            connection.finish(stream, _UNAUTHENTICATED)
            return
        if method is None:
            connection.finish(
                stream, frames.status_trailers(GRPC_UNIMPLEMENTED, f"unknown method {path.decode('latin-1')}")
            )
            return
        stream.task = connection.loop.create_task(run(connection, stream, method, headers))

    def _authenticated(self, headers: Headers) -> bool:
        """The stream carries the token; compared in constant time (one scan of a few headers)."""
        presented = next((value for name, value in headers if name == TOKEN_HEADER), b"")
        if not hmac.compare_digest(presented, cast(bytes, self._token)):
            return False
        self._authenticated_headers = headers
        return True


async def run(connection: Connection, stream: Stream, method: Method, headers: Headers = ()) -> None:
    """The handler over the stream's requests; its responses go out as they come, then its status."""
    serialize = method.serialize
    CALL_METADATA.set(headers)  # this stream's own task: its handler, and nothing else, sees them
    try:
        # aclosing: a handler left early still runs its ``finally`` now, not at GC.
        requests = Requests(connection, stream, method.deserialize, method.deserialize_large)
        async with contextlib.aclosing(method.handler(requests)) as out:
            async for response in out:
                if stream.closed:
                    return
                connection.send_message(stream, serialize(response))
                # Not held while the handler waits for its next request (a reply with a body of
                # megabytes would be, until the answer's headers).
                del response
        trailers = OK_TRAILERS
    except asyncio.CancelledError:
        if stream.closed or stream.trailers is not None:
            return  # the client reset the stream, the connection went away, or we refused it
        # Not our cancellation: something the handler awaited was cancelled.
        log.warning("stream %d: the handler was cancelled", stream.id)
        trailers = frames.status_trailers(GRPC_INTERNAL, "CancelledError")
    except Exception as exc:
        log.exception("stream %d: handler failed", stream.id)
        trailers = frames.status_trailers(GRPC_INTERNAL, type(exc).__name__)
    connection.finish(stream, trailers)


def refuse_live_socket(path: str) -> None:
    """Raises if a process is listening on the Unix socket ``path``; a stale file is fine.

    Replacing a live one would silently cut another process (say, a second ext_proc
    given the same path) off from Envoy.
    """
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    else:
        raise OSError(errno.EADDRINUSE, f"another process is listening on {path}")
    finally:
        probe.close()


class Server:
    """Listens on a TCP address, a Unix socket, or both; ``stop`` drains open streams first."""

    def __init__(
        self, methods: dict[str, Method], max_message: int = MAX_MESSAGE, limits: Limits = DEFAULT_LIMITS
    ) -> None:
        self._methods = {path.encode(): method for path, method in methods.items()}
        self._max_message = max_message
        self._limits = limits
        self._connections: set[Connection] = set()
        self._listeners: list[asyncio.Server] = []

    async def start(self, host: str, port: int, token: bytes | None = None) -> int:
        """``token``: every stream on this listener must carry it in TOKEN_HEADER (else UNAUTHENTICATED)."""
        if token is not None and not token:
            raise ValueError("an empty token would let anyone in")
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(lambda: self._connection(token), host, port, reuse_address=True)
        self._listeners.append(listener)
        return int(listener.sockets[0].getsockname()[1])

    async def start_unix(self, path: str) -> None:
        """Envoy beside us (same host or pod) reaches a Unix socket without the TCP stack.

        A stale socket file is replaced; a live one is not (:func:`refuse_live_socket`).
        """
        refuse_live_socket(path)
        loop = asyncio.get_running_loop()
        self._listeners.append(await loop.create_unix_server(self._connection, path))

    def _connection(self, token: bytes | None = None) -> Connection:
        router = Router(self._methods, token)
        conn = Connection(router.open, self._connections.discard, self._max_message, self._limits)
        self._connections.add(conn)
        return conn

    async def stop(self, grace: float) -> None:
        for listener in self._listeners:
            listener.close()
        for conn in list(self._connections):
            conn.close()
        waits: list[Coroutine[Any, Any, Any]] = [conn.idle.wait() for conn in self._connections]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), grace)
        for conn in list(self._connections):
            conn.abort()
        for listener in self._listeners:
            await listener.wait_closed()
