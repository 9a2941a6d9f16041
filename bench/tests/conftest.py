from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bench.tests.local_server import Responder, ServerFactory, serve


@pytest.fixture
async def server_factory() -> AsyncIterator[ServerFactory]:
    servers: list[asyncio.Server] = []

    async def make(respond: Responder) -> int:
        server, port = await serve(respond)
        servers.append(server)
        return port

    yield make
    for s in servers:
        s.close()
        await s.wait_closed()
