"""Shared-state backends for the idempotency and limits tests.

Every functional test runs twice: against Redis (127.0.0.1:6379, or
``INFERY_TEST_REDIS_URL``) and against the in-process backend. Redis tests use
a fresh key prefix and delete it afterwards; an unreachable Redis fails the
tests, it never skips them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from ext_proc.shared_state import MemoryState, RedisState, SharedState

REDIS_URL = os.environ.get("INFERY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Backend:
    """One test's store. ``replica()`` is another gateway process on the same store
    (for the in-process backend there is only one process, so it is the same object)."""

    def __init__(self, kind: str, prefix: str) -> None:
        self.kind = kind
        self.prefix = prefix
        self._states: list[SharedState] = []
        self.state = self.replica()

    def replica(self) -> SharedState:
        if self.kind == "memory":
            if self._states:
                return self._states[0]
            state: SharedState = MemoryState(prefix=self.prefix)
        else:
            state = RedisState(REDIS_URL, prefix=self.prefix)
        self._states.append(state)
        return state

    async def close(self) -> None:
        for state in self._states:
            await state.close()


@pytest_asyncio.fixture(loop_scope="function")
async def redis_client() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()  # raises if Redis is not there: these tests must fail, not skip
        yield client
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def _backend(kind: str, redis_client: Redis) -> AsyncIterator[Backend]:
    prefix = f"infery-test-{uuid.uuid4().hex[:12]}"
    b = Backend(kind, prefix)
    try:
        yield b
    finally:
        await b.close()
        keys = [k async for k in redis_client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await redis_client.delete(*keys)


@pytest_asyncio.fixture(loop_scope="function", params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, redis_client: Redis) -> AsyncIterator[Backend]:
    async with _backend(request.param, redis_client) as b:
        yield b


@pytest_asyncio.fixture(loop_scope="function")
async def redis_backend(redis_client: Redis) -> AsyncIterator[Backend]:
    async with _backend("redis", redis_client) as b:
        yield b


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def dead_redis_url() -> str:
    """A port nobody listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"
