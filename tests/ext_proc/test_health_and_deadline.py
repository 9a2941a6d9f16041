"""ext_proc's health method for Envoy's checker, and asking Envoy for more time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from ext_proc import envoy_messages as msg
from ext_proc import health
from ext_proc.deadline import MessageDeadline, Suspended, start
from ext_proc.h2_grpc import Method, Server
from ext_proc.settings import ExtProcSettings


async def _check(target: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(
            health.CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        reply = await asyncio.wait_for(call(health_pb2.HealthCheckRequest()), 5)
        return int(reply.status)


async def _echo(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for message in requests:
        yield message


@pytest.mark.parametrize("over_unix_socket", [False, True], ids=["tcp-with-token", "unix"])
async def test_serving_only_once_configured(tmp_path: Path, over_unix_socket: bool) -> None:
    """Envoy's checker reaches it on either listener, without the TCP listener's token
    (which it cannot send): the one method served so."""
    configured = False
    echo = Method(_echo, bytes, bytes)
    server = Server({"/t.T/Echo": echo, **health.methods(lambda: configured)})
    if over_unix_socket:
        await server.start_unix(str(tmp_path / "h.sock"))
        target = f"unix:{tmp_path / 'h.sock'}"
    else:
        target = f"127.0.0.1:{await server.start('127.0.0.1', 0, token=b'the-token')}"
    try:
        assert await _check(target) == health_pb2.HealthCheckResponse.NOT_SERVING
        configured = True
        assert await _check(target) == health_pb2.HealthCheckResponse.SERVING
        if not over_unix_socket:  # every other method still needs the token
            async with grpc.aio.insecure_channel(target) as channel:
                call = channel.unary_unary("/t.T/Echo", request_serializer=bytes, response_deserializer=bytes)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await asyncio.wait_for(call(b"hi"), 5)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await server.stop(grace=1)


def test_the_deadline_comes_from_the_same_variables_as_envoys():
    deadline = ExtProcSettings.from_env(
        {"INFERY_EXT_PROC_MESSAGE_TIMEOUT_S": "2", "INFERY_EXT_PROC_MAX_MESSAGE_TIMEOUT_S": "30"}
    ).deadline()
    assert (deadline.extend_after_s, deadline.max_message_timeout_s) == (1.0, 30.0)
    assert ExtProcSettings.from_env({}).deadline() == MessageDeadline(5.0, 60.0)
    assert msg.more_time(30).override_message_timeout.ToMilliseconds() == 30_000
    assert msg.more_time(30).WhichOneof("response") is None


async def _collect(work, extend_after_s: float) -> list[str]:
    started = start(work)
    if not isinstance(started, Suspended):
        return [started]
    return [item async for item in started.answers(extend_after_s, "more time")]


async def test_work_that_never_waits_is_answered_without_a_task():
    async def immediate() -> str:
        return "answer"

    assert start(immediate()) == "answer"


async def test_work_that_finishes_in_time_is_answered_alone():
    async def immediate() -> str:
        return "answer"

    async def short_wait() -> str:
        await asyncio.sleep(0.01)
        return "answer"

    assert await _collect(immediate(), 0.5) == ["answer"]
    assert await _collect(short_wait(), 0.5) == ["answer"]


async def test_work_that_runs_long_asks_for_more_time_first():
    async def slow() -> str:
        await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        return "answer"

    assert await _collect(slow(), 0.1) == ["more time", "answer"]


async def test_errors_of_the_work_reach_the_caller():
    async def failing() -> str:
        await asyncio.sleep(0.2)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await _collect(failing(), 0.05)


async def test_leaving_early_cancels_the_work():
    cancelled = asyncio.Event()

    async def endless() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    started = start(endless())
    assert isinstance(started, Suspended)
    phase = started.answers(0.05, "more time")
    assert await anext(phase) == "more time"
    await phase.aclose()
    await asyncio.wait_for(cancelled.wait(), 2)
