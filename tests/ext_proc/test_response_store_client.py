"""ext_proc's response store client, against the control plane's real gRPC service (SQLite), and
against no service at all: a store that does not answer is 503 where it is needed, and never
fails the keeping of an answer; a keep it missed is tried again until it lands or the retries
are spent, and only then counted as lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from control_plane.response_store import DAY_S, ResponseStoreService, add_response_store
from control_plane.store import db
from ext_proc.errors import GatewayError
from ext_proc.response_store import ResponseStore
from infery.stack import free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _serve(url: str, address: str = "127.0.0.1:0") -> tuple[grpc.aio.Server, int, Any]:
    """The control plane's store service on ``address``: (server, port, its engine)."""
    engine, sessions = db.open_store(url)
    server = grpc.aio.server()
    add_response_store(server, ResponseStoreService(sessions, 30 * DAY_S))
    port = server.add_insecure_port(address)
    await server.start()
    return server, port, engine


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[str]:
    server, port, engine = await _serve(f"sqlite:///{tmp_path / 'store.db'}")
    yield f"127.0.0.1:{port}"
    await server.stop(grace=None)
    engine.dispose()


async def _until(check: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.05)


async def test_keep_find_forget(target: str) -> None:
    store = ResponseStore(target)
    assert await store.keep("ws-a", "resp_1", "gpt-4o-mini", 1, b'{"id":"resp_1"}', b"[]")
    kept = await store.find("ws-a", "resp_1")
    assert kept is not None and (kept.response, kept.input_items) == (b'{"id":"resp_1"}', b"[]")
    assert await store.find("ws-b", "resp_1") is None  # another workspace's: not found
    assert await store.forget("ws-b", "resp_1") is False
    assert await store.forget("ws-a", "resp_1") is True
    assert await store.find("ws-a", "resp_1") is None


async def test_a_store_that_does_not_answer() -> None:
    store = ResponseStore(f"127.0.0.1:{free_port()}", timeout_s=0.5, retry_delays_s=())
    assert await store.keep("ws", "resp_1", "m", 1, b"{}", b"[]") is False
    assert store.keep_failures == 1
    for call in (store.find("ws", "resp_1"), store.forget("ws", "resp_1")):
        with pytest.raises(GatewayError) as info:
            await call
        assert (info.value.status, info.value.code) == (503, "responses_unavailable")


async def test_a_keep_the_store_missed_is_tried_again_until_it_lands(tmp_path: Path) -> None:
    """The control plane is down when the answer is given, and back a moment later: the response
    is kept by a retry, and nothing is counted as lost."""
    port = free_port()
    store = ResponseStore(f"127.0.0.1:{port}", timeout_s=0.5, retry_delays_s=(0.2, 0.5, 1, 2, 4, 8))
    assert await store.keep("ws-a", "resp_late", "m", 1, b'{"id":"resp_late"}', b"[]") is False
    assert store.retrying == 1 and store.keep_failures == 0
    server, _, engine = await _serve(f"sqlite:///{tmp_path / 'late.db'}", f"127.0.0.1:{port}")
    try:

        async def kept() -> bool:
            return store.retrying == 0

        await _until(kept)
        found = await store.find("ws-a", "resp_late")
        assert found is not None and found.response == b'{"id":"resp_late"}'
        assert store.keep_failures == 0 and store.keep_retries >= 1
    finally:
        await server.stop(grace=None)
        engine.dispose()


async def test_a_keep_never_taken_is_counted_once_its_retries_are_spent() -> None:
    store = ResponseStore(f"127.0.0.1:{free_port()}", timeout_s=0.2, retry_delays_s=(0.01, 0.01, 0.01))
    assert await store.keep("ws", "resp_lost", "m", 1, b"{}", b"[]") is False
    assert store.keep_failures == 0  # not lost yet: being tried again

    async def spent() -> bool:
        return store.retrying == 0

    await _until(spent)
    assert (store.keep_failures, store.keep_retries) == (1, 3)


async def test_a_keep_the_store_refuses_is_not_tried_again(target: str) -> None:
    """INVALID_ARGUMENT (no workspace) will not pass by waiting: counted at once, no retry."""
    store = ResponseStore(target)
    assert await store.keep("", "resp_1", "m", 1, b"{}", b"[]") is False
    assert (store.keep_failures, store.keep_retries, store.retrying) == (1, 0, 0)
