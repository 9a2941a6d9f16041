"""ext_proc's response store client, against the control plane's real gRPC service (SQLite), and
against no service at all: a store that does not answer is 503 where it is needed, and never
fails the keeping of an answer; a keep it missed is tried again until it lands or the retries
are spent, and only then counted as lost. Keeps that arrive while a KeepMany is in flight go
together in the next one, each caller answered for its own row; a control plane without
KeepMany (older) is kept through Keep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from infery_proto.v1 import responses_pb2

from control_plane.response_store import DAY_S, ResponseStoreService, add_response_store
from control_plane.store import db
from ext_proc import response_store
from ext_proc.errors import GatewayError
from ext_proc.response_store import ResponseStore
from infery.stack import free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Watched(ResponseStoreService):
    """The real service, its KeepMany calls counted (rows each) and, with ``hold`` given, every
    call held at its start until ``hold`` is set (so that keeps pile up behind it); ``unavailable``
    calls answered UNAVAILABLE for every row first (a failed write)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[int] = []
        self.hold: asyncio.Event | None = None
        self.holding = asyncio.Event()
        self.unavailable = 0

    async def KeepMany(
        self, request: responses_pb2.StoredResponses, context: grpc.aio.ServicerContext
    ) -> responses_pb2.KeepManyAck:
        self.calls.append(len(request.responses))
        if self.hold is not None:
            self.holding.set()
            await self.hold.wait()
        if self.unavailable:
            self.unavailable -= 1
            return responses_pb2.KeepManyAck(
                results=[responses_pb2.KEEP_RESULT_UNAVAILABLE] * len(request.responses)
            )
        return await super().KeepMany(request, context)


def _older(service: ResponseStoreService) -> grpc.GenericRpcHandler:
    """The service as a control plane older than KeepMany serves it: Keep, Find and Forget only
    (gRPC answers UNIMPLEMENTED for the rest)."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            getattr(service, name),
            request_deserializer=request.FromString,
            response_serializer=lambda message: message.SerializeToString(),
        )
        for name, request in (
            ("Keep", responses_pb2.StoredResponse),
            ("Find", responses_pb2.ResponseRef),
            ("Forget", responses_pb2.ResponseRef),
        )
    }
    return grpc.method_handlers_generic_handler("infery.v1.ResponseStore", handlers)


async def _serve(
    url: str, address: str = "127.0.0.1:0", older: bool = False
) -> tuple[grpc.aio.Server, int, Any, Watched]:
    """The control plane's store service on ``address``: (server, port, its engine, the service)."""
    engine, sessions = db.open_store(url)
    server = grpc.aio.server()
    service = Watched(sessions, 30 * DAY_S)
    if older:
        server.add_generic_rpc_handlers((_older(service),))
    else:
        add_response_store(server, service)
    port = server.add_insecure_port(address)
    await server.start()
    return server, port, engine, service


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Watched]]:
    server, port, engine, service = await _serve(f"sqlite:///{tmp_path / 'store.db'}")
    yield f"127.0.0.1:{port}", service
    await server.stop(grace=None)
    engine.dispose()


@pytest.fixture
def target(served: tuple[str, Watched]) -> str:
    return served[0]


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
    server, _, engine, _ = await _serve(f"sqlite:///{tmp_path / 'late.db'}", f"127.0.0.1:{port}")
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


def _keep(store: ResponseStore, workspace: str, response_id: str) -> asyncio.Task[bool]:
    body = b'{"id":"' + response_id.encode() + b'"}'
    return asyncio.ensure_future(store.keep(workspace, response_id, "m", 1, body, b"[]"))


async def _found(store: ResponseStore, workspace: str, response_id: str) -> bool:
    kept = await store.find(workspace, response_id)
    return kept is not None and kept.response == b'{"id":"' + response_id.encode() + b'"}'


async def _held(service: Watched) -> asyncio.Event:
    """Hold every KeepMany at its start from now on; the event that lets them go."""
    service.hold = hold = asyncio.Event()
    service.holding.clear()
    return hold


async def test_a_keep_alone_is_sent_at_once(served: tuple[str, Watched]) -> None:
    target, service = served
    store = ResponseStore(target)
    assert await store.keep("ws-a", "resp_1", "m", 1, b"{}", b"[]")
    assert service.calls == [1]


async def test_concurrent_keeps_go_together_each_caller_answered(served: tuple[str, Watched]) -> None:
    target, service = served
    store = ResponseStore(target)
    keeps = [_keep(store, f"ws-{i % 3}", f"resp_{i}") for i in range(40)]
    assert await asyncio.gather(*keeps) == [True] * 40
    assert sum(service.calls) == 40 and len(service.calls) < 40
    assert store.keep_rpcs == len(service.calls)
    assert all([await _found(store, f"ws-{i % 3}", f"resp_{i}") for i in range(40)])
    assert await store.find("ws-1", "resp_0") is None  # each row kept by its own workspace


async def test_keeps_during_a_call_go_in_the_next_and_an_invalid_row_is_lost_alone(
    served: tuple[str, Watched],
) -> None:
    target, service = served
    store = ResponseStore(target)
    hold = await _held(service)
    first = _keep(store, "ws-a", "resp_0")
    await service.holding.wait()
    rest = [_keep(store, "ws-a", f"resp_{i}") for i in range(1, 6)]
    invalid = _keep(store, "", "resp_x")  # no workspace: the store refuses it
    await asyncio.sleep(0.05)
    hold.set()
    assert await first and await asyncio.gather(*rest) == [True] * 5
    assert await invalid is False
    assert service.calls == [1, 6]
    assert (store.keep_failures, store.keep_retries, store.retrying) == (1, 0, 0)  # not tried again


async def test_a_caller_that_gives_up_loses_no_others_keep(served: tuple[str, Watched]) -> None:
    """A client hanging up cancels its exchange's keep: neither the call in flight nor the rows
    queued with it are cancelled for the others (the send is a task of its own)."""
    target, service = served
    store = ResponseStore(target)
    hold = await _held(service)
    in_flight = [_keep(store, "ws-a", f"resp_{i}") for i in range(2)]
    await service.holding.wait()
    queued = [_keep(store, "ws-a", f"resp_{i}") for i in range(2, 6)]
    await asyncio.sleep(0.05)
    in_flight[0].cancel()
    queued[0].cancel()
    await asyncio.sleep(0.05)
    hold.set()
    assert await in_flight[1] and await asyncio.gather(*queued[1:]) == [True] * 3
    assert service.calls == [2, 4]
    assert all([await _found(store, "ws-a", f"resp_{i}") for i in range(6)])  # even the given-up ones


async def test_a_queued_keep_is_bounded_by_its_own_deadline(served: tuple[str, Watched]) -> None:
    """The batch's deadline is its oldest keep's: a keep that waited behind a call that did not
    answer fails by its own time, never twice it."""
    target, service = served
    store = ResponseStore(target, timeout_s=0.4, retry_delays_s=())
    hold = await _held(service)
    first = _keep(store, "ws-a", "resp_0")
    await service.holding.wait()
    start = time.monotonic()
    queued = _keep(store, "ws-a", "resp_1")
    assert await first is False and await queued is False
    assert time.monotonic() - start < 0.7  # its own 0.4 s and slack, never twice it
    # Sent with what was left of its own time (a few ms, the store still holding), or not at all
    # when that had passed by the time the first call failed: which one is a race of milliseconds.
    assert service.calls in ([1], [1, 1])
    assert store.keep_failures == 2
    hold.set()


class _SkewedClock:
    """``time`` for the client module, its clock moved on by ``skew`` seconds: a keep's time can
    pass while it waits in the queue without the test waiting for it."""

    skew = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.skew


async def test_a_keep_whose_time_passed_in_the_queue_is_not_sent(
    served: tuple[str, Watched], monkeypatch: pytest.MonkeyPatch
) -> None:
    target, service = served
    clock = _SkewedClock()
    monkeypatch.setattr(response_store, "time", clock)
    store = ResponseStore(target, timeout_s=0.4, retry_delays_s=())
    hold = await _held(service)
    first = _keep(store, "ws-a", "resp_0")
    await service.holding.wait()
    queued = _keep(store, "ws-a", "resp_1")
    await asyncio.sleep(0.01)  # queued, its deadline 0.4 s on
    clock.skew = 1.0  # and passed, by the time the call in flight fails
    assert await first is False and await queued is False
    assert service.calls == [1] and store.keep_rpcs == 1  # never sent, nor tried
    assert store.keep_failures == 2
    hold.set()


async def test_rows_the_store_could_not_write_are_tried_again(served: tuple[str, Watched]) -> None:
    target, service = served
    store = ResponseStore(target, retry_delays_s=(0.05, 0.1))
    service.unavailable = 1
    assert await asyncio.gather(*(_keep(store, "ws-a", f"resp_{i}") for i in range(3))) == [False] * 3

    async def kept() -> bool:
        return store.retrying == 0

    await _until(kept)
    assert (store.keep_failures, store.keep_retries) == (0, 3)
    assert service.calls[0] == 3 and sum(service.calls) == 6  # the retries were KeepMany rows too
    assert all([await _found(store, "ws-a", f"resp_{i}") for i in range(3)])


async def test_an_older_control_plane_is_kept_through_keep(tmp_path: Path) -> None:
    """UNIMPLEMENTED (a control plane older than KeepMany, in a rolling upgrade): the rows of that
    call and every keep after are sent through Keep; KeepMany is not tried again."""
    server, port, engine, service = await _serve(f"sqlite:///{tmp_path / 'old.db'}", older=True)
    try:
        store = ResponseStore(f"127.0.0.1:{port}", retry_delays_s=())
        assert await asyncio.gather(*(_keep(store, "ws-a", f"resp_{i}") for i in range(10))) == [True] * 10
        assert await _keep(store, "ws-a", "resp_late")
        assert await _keep(store, "", "resp_x") is False  # Keep's INVALID_ARGUMENT: lost, not retried
        assert (store.keep_failures, store.keep_retries) == (1, 0)
        assert all([await _found(store, "ws-a", f"resp_{i}") for i in [*range(10), "late"]])
        assert service.calls == [] and store.keep_many_unimplemented
    finally:
        await server.stop(grace=None)
        engine.dispose()
