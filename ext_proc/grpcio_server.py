"""The same ext_proc service on ``grpc.aio``: the switch-off for ext_proc's own HTTP/2 server.

``INFERY_EXT_PROC_SERVER=grpcio`` (``--server grpcio``) serves the very method table
:mod:`ext_proc.h2_grpc` serves (``ext_proc.server.methods()`` and the health check: each a
handler, a deserializer and a serializer) on the same addresses, with the same rules: a
Unix socket needs no token (its directory guards it), a TCP listener answers
UNAUTHENTICATED to any stream without the token (``wire.EXT_PROC_TOKEN_HEADER``) except the
public health check, a live socket file is never taken over, and a failing handler ends its call with
INTERNAL and the exception's type. It costs about 2.5 times the CPU per request (every
message crosses three threads, ``ext_proc/h2_grpc/__init__.py``): it is there so that a
problem in our HTTP/2 server can be ruled out, or worked around, by a restart.

One ``grpc.aio`` server per listener, because the token rule differs between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from ext_proc.h2_grpc import CALL_METADATA, MAX_MESSAGE, TOKEN_HEADER, Handler, Method
from ext_proc.h2_grpc.limits import MAX_CONCURRENT_STREAMS, MAX_HEADER_BLOCK
from ext_proc.h2_grpc.server import UNAUTHENTICATED_MESSAGE, refuse_live_socket

log = logging.getLogger("infery.ext_proc.grpcio")

_TOKEN_KEY = TOKEN_HEADER.decode()


def _behaviour(path: str, handler: Handler) -> Any:
    """The handler as grpc.aio runs a stream-stream method: an async generator of responses."""

    async def behaviour(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        CALL_METADATA.set(context.invocation_metadata() or ())
        try:
            async with contextlib.aclosing(handler(requests)) as responses:
                async for response in responses:
                    yield response
        except Exception as exc:
            log.exception("%s: handler failed", path)
            await context.abort(grpc.StatusCode.INTERNAL, type(exc).__name__)

    return behaviour


def _joined(serialize: Callable[[Any], bytes | list[bytes]]) -> Callable[[Any], bytes]:
    """grpc wants one string: a reply serialized in pieces (a large body kept aside) is joined."""

    def one(response: Any) -> bytes:
        out = serialize(response)
        return out if isinstance(out, bytes) else b"".join(out)

    return one


async def _unauthenticated(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)


class MethodTable(grpc.GenericRpcHandler):
    """The method table for one listener: an unknown path is left to grpc (UNIMPLEMENTED)."""

    def __init__(self, methods: dict[str, Method], token: bytes | None) -> None:
        self._token = token  # None: no check (a Unix socket)
        self._handlers = {
            path: (
                method.public,
                grpc.stream_stream_rpc_method_handler(
                    _behaviour(path, method.handler),
                    request_deserializer=method.deserialize,
                    response_serializer=_joined(method.serialize),
                ),
            )
            for path, method in methods.items()
        }
        self._refusal = grpc.stream_stream_rpc_method_handler(_unauthenticated)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        found = self._handlers.get(handler_call_details.method)
        if found is None:
            return None
        public, handler = found
        if self._token is not None and not public and not self._carries_token(handler_call_details):
            return self._refusal
        return handler

    def _carries_token(self, details: grpc.HandlerCallDetails) -> bool:
        metadata: Sequence[tuple[str, str | bytes]] = details.invocation_metadata or ()
        presented = next((value for key, value in metadata if key == _TOKEN_KEY), "")
        raw = presented.encode() if isinstance(presented, str) else presented
        return hmac.compare_digest(raw, self._token or b"")


class Server:
    """``ext_proc.h2_grpc.Server``'s interface (start, start_unix, stop) on ``grpc.aio``."""

    def __init__(self, methods: dict[str, Method], max_message: int = MAX_MESSAGE) -> None:
        self._methods = methods
        self._options = [
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", -1),
            ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS),
            ("grpc.max_metadata_size", MAX_HEADER_BLOCK),
            # A second ext_proc on the same port must fail to start, not share it silently.
            ("grpc.so_reuseport", 0),
        ]
        self._servers: list[grpc.aio.Server] = []

    async def _serve(self, address: str, token: bytes | None) -> int:
        server = grpc.aio.server(options=self._options)
        server.add_generic_rpc_handlers((MethodTable(self._methods, token),))
        port = server.add_insecure_port(address)
        await server.start()
        self._servers.append(server)
        return port

    async def start(self, host: str, port: int, token: bytes | None = None) -> int:
        """``token``: every stream on this listener must carry it in TOKEN_HEADER (else UNAUTHENTICATED)."""
        if token is not None and not token:
            raise ValueError("an empty token would let anyone in")
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        bound = await self._serve(address, token)
        if not bound:
            raise OSError(f"cannot listen on {address}")
        return bound

    async def start_unix(self, path: str) -> None:
        refuse_live_socket(path)
        await self._serve(f"unix:{path}", None)

    async def stop(self, grace: float) -> None:
        """Refuses new calls, lets open ones finish for up to ``grace`` seconds, then cancels them."""
        await asyncio.gather(*(server.stop(grace) for server in self._servers))
