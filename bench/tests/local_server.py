"""A tiny local HTTP/1.1 server for the load clients' tests (bench/tests/conftest.py's ``server_factory``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


def chunked(parts: list[bytes]) -> bytes:
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


Responder = Callable[[int], bytes]
ServerFactory = Callable[[Responder], Awaitable[int]]


async def serve(respond: Responder) -> tuple[asyncio.Server, int]:
    """A keep-alive server answering request number ``n`` (per connection) with ``respond(n)``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                writer.write(respond(n))
                await writer.drain()
                n += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]
