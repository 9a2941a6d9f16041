"""The real gRPC UsageService on a free port: dedupe across deliveries, no ack on failure."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from cp_support import THREE
from infery_proto.v1 import usage_pb2, usage_pb2_grpc
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, func, select

from control_plane.store.tables import UsageRecord
from control_plane.usage_service import add_usage_service

# The project runs async fixtures on the session loop; tests must share it.
pytestmark = pytest.mark.asyncio(loop_scope="session")


async def serve(session_factory: Callable[[], Session]) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    add_usage_service(server, session_factory)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
async def stub(session_factory: sessionmaker[Session]) -> AsyncIterator[usage_pb2_grpc.UsageServiceStub]:
    server, target = await serve(session_factory)
    async with grpc.aio.insecure_channel(target) as channel:
        yield usage_pb2_grpc.UsageServiceStub(channel)  # type: ignore[no-untyped-call]
    await server.stop(grace=None)


async def test_same_batch_twice_is_stored_once(
    stub: usage_pb2_grpc.UsageServiceStub, session_factory: sessionmaker[Session]
) -> None:
    batch = usage_pb2.UsageBatch(records=THREE)
    first = await stub.Report(batch, timeout=5)
    second = await stub.Report(batch, timeout=5)
    assert (first.stored, first.duplicates) == (3, 0)
    assert (second.stored, second.duplicates) == (0, 3)
    with session_factory() as session:
        assert session.exec(select(func.count()).select_from(UsageRecord)).one() == 3


async def test_failure_is_not_acked() -> None:
    def broken() -> Session:
        raise RuntimeError("database is down")

    server, target = await serve(broken)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = usage_pb2_grpc.UsageServiceStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.Report(usage_pb2.UsageBatch(records=THREE), timeout=5)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(grace=None)
