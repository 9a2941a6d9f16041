"""ext_proc's response store client, against the control plane's real gRPC service (SQLite), and
against no service at all: a store that does not answer is 503 where it is needed, and never
fails the keeping of an answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from control_plane.response_store import DAY_S, ResponseStoreService, add_response_store
from control_plane.store import db
from ext_proc.errors import GatewayError
from ext_proc.response_store import ResponseStore
from infery.stack import free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[str]:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine, sessions = db.open_store(url)
    server = grpc.aio.server()
    add_response_store(server, ResponseStoreService(sessions, 30 * DAY_S))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(grace=None)
    engine.dispose()


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
    store = ResponseStore(f"127.0.0.1:{free_port()}", timeout_s=0.5)
    assert await store.keep("ws", "resp_1", "m", 1, b"{}", b"[]") is False
    assert store.keep_failures == 1
    for call in (store.find("ws", "resp_1"), store.forget("ws", "resp_1")):
        with pytest.raises(GatewayError) as info:
            await call
        assert (info.value.status, info.value.code) == (503, "responses_unavailable")
