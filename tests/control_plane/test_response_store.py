"""The real gRPC ResponseStore on a free port: kept per workspace, found by no other, forgotten,
expired after the retention, and swept."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from infery_proto.settings import SettingsError
from infery_proto.v1 import responses_pb2, responses_pb2_grpc
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, func, select

from control_plane.response_store import DAY_S, ResponseStoreService, add_response_store
from control_plane.settings import Settings
from control_plane.store.tables import StoredResponse

pytestmark = pytest.mark.asyncio(loop_scope="session")

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(session_factory: sessionmaker[Session], clock: Clock) -> ResponseStoreService:
    return ResponseStoreService(session_factory, 30 * DAY_S, clock)


@pytest.fixture
async def stub(service: ResponseStoreService) -> AsyncIterator[responses_pb2_grpc.ResponseStoreStub]:
    server = grpc.aio.server()
    add_response_store(server, service)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield responses_pb2_grpc.ResponseStoreStub(channel)  # type: ignore[no-untyped-call]
    await server.stop(grace=None)


def stored(
    workspace: str = "ws-a", response_id: str = "resp_1", text: bytes = b"{}"
) -> responses_pb2.StoredResponse:
    return responses_pb2.StoredResponse(
        workspace_id=workspace,
        id=response_id,
        model="claude-sonnet-4-5",
        created_at=int(NOW),
        response=b'{"id":"' + response_id.encode() + b'","object":"response"}',
        input_items=b'[{"id":"msg_1","type":"message","role":"user","content":' + text + b"}]",
    )


async def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call  # type: ignore[misc]
    return failure.value.code()


async def test_a_kept_response_is_found_by_its_workspace_only(
    stub: responses_pb2_grpc.ResponseStoreStub,
) -> None:
    await stub.Keep(stored(), timeout=5)
    found = await stub.Find(responses_pb2.ResponseRef(workspace_id="ws-a", id="resp_1"), timeout=5)
    assert (found.id, found.model, found.response, found.input_items) == (
        "resp_1",
        "claude-sonnet-4-5",
        stored().response,
        stored().input_items,
    )
    assert found.expires_at == int(NOW) + 30 * DAY_S  # the control plane's retention, not the caller's
    other = stub.Find(responses_pb2.ResponseRef(workspace_id="ws-b", id="resp_1"), timeout=5)
    assert await code_of(other) == grpc.StatusCode.NOT_FOUND
    unknown = stub.Find(responses_pb2.ResponseRef(workspace_id="ws-a", id="resp_2"), timeout=5)
    assert await code_of(unknown) == grpc.StatusCode.NOT_FOUND


async def test_keeping_again_replaces(stub: responses_pb2_grpc.ResponseStoreStub) -> None:
    await stub.Keep(stored(text=b"1"), timeout=5)
    await stub.Keep(stored(text=b"2"), timeout=5)
    found = await stub.Find(responses_pb2.ResponseRef(workspace_id="ws-a", id="resp_1"), timeout=5)
    assert found.input_items.endswith(b'"content":2}]')


async def test_forget_deletes_for_its_workspace_only(stub: responses_pb2_grpc.ResponseStoreStub) -> None:
    await stub.Keep(stored(), timeout=5)
    other = await stub.Forget(responses_pb2.ResponseRef(workspace_id="ws-b", id="resp_1"), timeout=5)
    assert other.deleted is False
    mine = await stub.Forget(responses_pb2.ResponseRef(workspace_id="ws-a", id="resp_1"), timeout=5)
    assert mine.deleted is True
    again = await stub.Forget(responses_pb2.ResponseRef(workspace_id="ws-a", id="resp_1"), timeout=5)
    assert again.deleted is False
    gone = stub.Find(responses_pb2.ResponseRef(workspace_id="ws-a", id="resp_1"), timeout=5)
    assert await code_of(gone) == grpc.StatusCode.NOT_FOUND


async def test_an_expired_response_is_not_answered_and_is_swept(
    stub: responses_pb2_grpc.ResponseStoreStub,
    service: ResponseStoreService,
    clock: Clock,
    session_factory: sessionmaker[Session],
) -> None:
    await stub.Keep(stored("ws-a", "resp_old"), timeout=5)
    clock.now += 29 * DAY_S
    await stub.Keep(stored("ws-a", "resp_new"), timeout=5)
    assert service.sweep() == 0
    clock.now += 1 * DAY_S  # resp_old is 30 days old
    expired = stub.Find(responses_pb2.ResponseRef(workspace_id="ws-a", id="resp_old"), timeout=5)
    assert await code_of(expired) == grpc.StatusCode.NOT_FOUND
    assert (
        await stub.Forget(responses_pb2.ResponseRef(workspace_id="ws-a", id="resp_old"), timeout=5)
    ).deleted is False
    assert service.sweep() == 1
    with session_factory() as session:
        assert session.exec(select(func.count()).select_from(StoredResponse)).one() == 1
    assert (
        await stub.Find(responses_pb2.ResponseRef(workspace_id="ws-a", id="resp_new"), timeout=5)
    ).id == "resp_new"


async def test_a_response_without_a_workspace_is_refused(stub: responses_pb2_grpc.ResponseStoreStub) -> None:
    assert await code_of(stub.Keep(stored(workspace=""), timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_store_failure_is_unavailable(clock: Clock) -> None:
    def broken() -> Session:
        raise RuntimeError("database is down")

    server = grpc.aio.server()
    add_response_store(server, ResponseStoreService(broken, DAY_S, clock))  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = responses_pb2_grpc.ResponseStoreStub(channel)  # type: ignore[no-untyped-call]
            assert await code_of(stub.Keep(stored(), timeout=5)) == grpc.StatusCode.UNAVAILABLE
            ref = responses_pb2.ResponseRef(workspace_id="ws-a", id="resp_1")
            assert await code_of(stub.Find(ref, timeout=5)) == grpc.StatusCode.UNAVAILABLE
            assert await code_of(stub.Forget(ref, timeout=5)) == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(grace=None)


async def test_the_retention_is_a_setting() -> None:
    assert Settings.from_env({}).responses_retention_days == 30
    assert Settings.from_env({"INFERY_RESPONSES_RETENTION_DAYS": "7"}).responses_retention_days == 7
    with pytest.raises(SettingsError):
        Settings.from_env({"INFERY_RESPONSES_RETENTION_DAYS": "0"})
