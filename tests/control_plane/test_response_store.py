"""The real gRPC ResponseStore on a free port, on SQLite and PostgreSQL: kept per workspace, found
by no other, forgotten, expired after the retention, and swept; concurrent keeps committed when
acked (keeps arriving during a write are written together), a failed write failing every keep it
carried and losing none that was acked."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import cast

import grpc
import pytest
from infery_proto.settings import SettingsError
from infery_proto.v1 import responses_pb2, responses_pb2_grpc
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, func, select

from control_plane.response_store import DAY_S, ResponseStoreService, add_response_store
from control_plane.settings import Settings
from control_plane.store import db
from control_plane.store.tables import StoredResponse
from tests.postgres import fresh_database

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


@pytest.fixture(scope="module")
def postgres_store() -> Iterator[str]:
    """One migrated PostgreSQL database for the module (a migration costs ~1 s); emptied per test."""
    with fresh_database() as url:
        db.migrate(url)
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return cast(str, request.getfixturevalue("sqlite_url"))
    url = cast(str, request.getfixturevalue("postgres_store"))
    engine = db.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM stored_responses")
    engine.dispose()
    return url


@pytest.fixture
def session_factory(store_url: str) -> Iterator[sessionmaker[Session]]:
    engine = db.create_engine(store_url)
    yield db.session_factory(engine)
    engine.dispose()


@pytest.fixture
def reader(store_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions of another engine (other connections), as another replica's: sees only what is committed."""
    engine = db.create_engine(store_url)
    yield db.session_factory(engine)
    engine.dispose()


class Sessions:
    """The store's session factory, watched: counts transactions (sessions opened), can hold the
    next one at its start (on the worker thread, so keeps pile up meanwhile), and fails commits
    while ``failing`` or at the commit ordinals of ``failing_commits`` (0 = the first)."""

    def __init__(self, real: sessionmaker[Session]) -> None:
        self._real = real
        self.opened = 0
        self.commits = 0
        self.failing = False
        self.failing_commits: range = range(0)
        self.hold: threading.Event | None = None
        self.held = threading.Event()

    def __call__(self) -> Session:
        self.opened += 1
        hold, self.hold = self.hold, None
        if hold is not None:
            self.held.set()
            hold.wait(10)
        session = self._real()
        commit = session.commit

        def failing_commit() -> None:
            ordinal, self.commits = self.commits, self.commits + 1
            if self.failing or ordinal in self.failing_commits:
                raise RuntimeError("the database is down")
            commit()

        session.commit = failing_commit  # type: ignore[method-assign]
        return session


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code.name)
        self.code = code


class Context:
    """What the servicer uses of its context, for calls that skip the network (so that the test
    knows when a keep has arrived)."""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code)


async def keep(
    service: ResponseStoreService, request: responses_pb2.StoredResponse
) -> grpc.StatusCode | None:
    """Keep through the servicer's method itself; None when acked, else the status it aborted with."""
    try:
        await service.Keep(request, cast(grpc.aio.ServicerContext, Context()))
    except Aborted as aborted:
        return aborted.code
    return None


async def settle() -> None:
    """Let every task that is ready run to its first wait (each keep to its queue)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def ten_keeps_during_a_held_write(
    service: ResponseStoreService, sessions: Sessions
) -> tuple[asyncio.Future[grpc.StatusCode | None], list[asyncio.Future[grpc.StatusCode | None]]]:
    """A keep (resp_0) whose write is held until ten more (resp_1..10) have arrived, then let go."""
    sessions.hold = hold = threading.Event()
    first = asyncio.ensure_future(keep(service, stored("ws-a", "resp_0")))
    assert await asyncio.to_thread(sessions.held.wait, 10)
    rest = [asyncio.ensure_future(keep(service, stored("ws-a", f"resp_{i}"))) for i in range(1, 11)]
    await settle()
    hold.set()
    return first, rest


@pytest.fixture
def sessions(session_factory: sessionmaker[Session]) -> Sessions:
    return Sessions(session_factory)


@pytest.fixture
def service(sessions: Sessions, clock: Clock) -> ResponseStoreService:
    return ResponseStoreService(sessions, 30 * DAY_S, clock)


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


def found(reader: sessionmaker[Session], workspace: str, response_id: str) -> bytes | None:
    """What another replica finds: the kept input items, read on another engine's connection."""
    with reader() as session:
        row = session.get(StoredResponse, (workspace, response_id))
        return None if row is None else bytes(row.input_items)


async def test_every_ack_means_committed(
    stub: responses_pb2_grpc.ResponseStoreStub, reader: sessionmaker[Session]
) -> None:
    seen: list[bytes | None] = []

    async def keep_then_look(i: int) -> None:
        await stub.Keep(stored("ws-a", f"resp_{i}", text=str(i).encode()), timeout=10)
        seen.append(found(reader, "ws-a", f"resp_{i}"))  # at once, before the loop runs anything else

    await asyncio.gather(*(keep_then_look(i) for i in range(48)))
    assert sorted(seen) == sorted(stored(text=str(i).encode()).input_items for i in range(48))


async def test_concurrent_keeps_of_one_id_leave_one_of_them(
    stub: responses_pb2_grpc.ResponseStoreStub, reader: sessionmaker[Session]
) -> None:
    versions = [stored("ws-a", "resp_1", text=str(i).encode()) for i in range(20)]
    await asyncio.gather(*(stub.Keep(version, timeout=10) for version in versions))
    assert found(reader, "ws-a", "resp_1") in {version.input_items for version in versions}
    with reader() as session:
        assert session.exec(select(func.count()).select_from(StoredResponse)).one() == 1


async def test_workspaces_stay_apart_when_kept_together(stub: responses_pb2_grpc.ResponseStoreStub) -> None:
    workspaces = [f"ws-{i}" for i in range(8)]
    await asyncio.gather(
        *(stub.Keep(stored(ws, "resp_1", text=ws.encode()), timeout=10) for ws in workspaces)
    )
    for ws in workspaces:
        answer = await stub.Find(responses_pb2.ResponseRef(workspace_id=ws, id="resp_1"), timeout=5)
        assert answer.input_items == stored(text=ws.encode()).input_items


async def test_a_failing_database_fails_its_keeps_and_loses_none_acked(
    stub: responses_pb2_grpc.ResponseStoreStub, sessions: Sessions, reader: sessionmaker[Session]
) -> None:
    async def keep_all(ids: range) -> list[grpc.StatusCode | None]:
        async def one(i: int) -> grpc.StatusCode | None:
            try:
                await stub.Keep(stored("ws-a", f"resp_{i}"), timeout=10)
            except grpc.aio.AioRpcError as err:
                return err.code()
            return None

        return list(await asyncio.gather(*(one(i) for i in ids)))

    assert await keep_all(range(16)) == [None] * 16
    sessions.failing = True
    assert await keep_all(range(16, 32)) == [grpc.StatusCode.UNAVAILABLE] * 16
    sessions.failing = False
    assert await keep_all(range(32, 48)) == [None] * 16
    kept = [i for i in range(48) if found(reader, "ws-a", f"resp_{i}") is not None]
    assert kept == [*range(16), *range(32, 48)]


async def test_keeps_arriving_during_a_write_are_written_together(
    service: ResponseStoreService, sessions: Sessions, reader: sessionmaker[Session]
) -> None:
    first, rest = await ten_keeps_during_a_held_write(service, sessions)
    assert await first is None
    assert await asyncio.gather(*rest) == [None] * 10
    assert sessions.opened == 2  # the first keep's transaction, then one for the ten
    assert all(found(reader, "ws-a", f"resp_{i}") is not None for i in range(11))


async def test_a_failed_write_fails_every_keep_it_carried(
    service: ResponseStoreService, sessions: Sessions, reader: sessionmaker[Session]
) -> None:
    sessions.failing_commits = range(1, 2)  # the second transaction's commit: the ten's
    first, rest = await ten_keeps_during_a_held_write(service, sessions)
    assert await first is None
    assert await asyncio.gather(*rest) == [grpc.StatusCode.UNAVAILABLE] * 10
    assert [found(reader, "ws-a", f"resp_{i}") is not None for i in range(11)] == [True] + [False] * 10
    assert (
        await asyncio.gather(*(keep(service, stored("ws-a", f"resp_{i}")) for i in range(1, 11)))
        == [None] * 10
    )  # ext_proc's retries
    assert all(found(reader, "ws-a", f"resp_{i}") is not None for i in range(11))


@pytest.mark.parametrize(
    ("rows", "answers_of_bytes", "transactions"), [(4, 100, 3), (64, 2.5, 5), (64, 0.5, 10)]
)
async def test_a_write_carries_at_most_its_rows_and_bytes(
    sessions: Sessions,
    clock: Clock,
    reader: sessionmaker[Session],
    rows: int,
    answers_of_bytes: float,
    transactions: int,
) -> None:
    size = stored().ByteSize()
    service = ResponseStoreService(
        sessions, 30 * DAY_S, clock, batch_rows=rows, batch_bytes=int(answers_of_bytes * size)
    )
    sessions.hold = hold = threading.Event()
    first = asyncio.ensure_future(keep(service, stored("ws-a", "resp_x")))
    assert await asyncio.to_thread(sessions.held.wait, 10)
    rest = [asyncio.ensure_future(keep(service, stored("ws-a", f"resp_{i}"))) for i in range(10)]
    await settle()
    hold.set()
    assert await first is None
    assert await asyncio.gather(*rest) == [None] * 10
    assert sessions.opened == 1 + transactions
    assert all(found(reader, "ws-a", f"resp_{i}") is not None for i in range(10))


async def test_keys_the_database_cannot_hold_are_invalid(
    stub: responses_pb2_grpc.ResponseStoreStub, reader: sessionmaker[Session]
) -> None:
    """Refused before they reach a write, where one bad row would fail every keep written with it."""
    for workspace, response_id in (("w" * 65, "resp_1"), ("ws-a", "r" * 129), ("ws-a", "resp\x001")):
        call = stub.Keep(stored(workspace, response_id), timeout=5)
        assert await code_of(call) == grpc.StatusCode.INVALID_ARGUMENT
    long_model = stored("ws-a", "r" * 128)
    long_model.model = "m" * 200
    await stub.Keep(long_model, timeout=5)
    with reader() as session:
        row = session.get(StoredResponse, ("ws-a", "r" * 128))
        assert row is not None and row.model == "m" * 128


async def test_an_id_no_row_can_have_is_not_found_not_a_store_failure(
    stub: responses_pb2_grpc.ResponseStoreStub, caplog: pytest.LogCaptureFixture
) -> None:
    """A Find's or a Forget's id is the client's (``previous_response_id``, GET and DELETE
    /v1/responses/{id}): one the database could not hold (NUL, past its column) names no response.
    It is NOT_FOUND, not UNAVAILABLE (the client's 503 ``responses_unavailable``, an invitation
    to retry, and the store's traceback in the log)."""
    await stub.Keep(stored("ws-a", "resp_1"), timeout=5)
    for workspace, response_id in (
        ("ws-a", "resp\x001"),
        ("ws\x00a", "resp_1"),
        ("ws-a", "r" * 129),
        ("w" * 65, "resp_1"),
    ):
        ref = responses_pb2.ResponseRef(workspace_id=workspace, id=response_id)
        assert await code_of(stub.Find(ref, timeout=5)) == grpc.StatusCode.NOT_FOUND, (workspace, response_id)
        assert (await stub.Forget(ref, timeout=5)).deleted is False
    assert not [r for r in caplog.records if r.exc_info]


KEPT, INVALID, UNAVAILABLE = (
    responses_pb2.KEEP_RESULT_KEPT,
    responses_pb2.KEEP_RESULT_INVALID,
    responses_pb2.KEEP_RESULT_UNAVAILABLE,
)


def many(*rows: responses_pb2.StoredResponse) -> responses_pb2.StoredResponses:
    return responses_pb2.StoredResponses(responses=rows)


async def test_keep_many_answers_each_row_in_order_and_writes_the_valid_ones_together(
    stub: responses_pb2_grpc.ResponseStoreStub, sessions: Sessions, reader: sessionmaker[Session]
) -> None:
    """A refused row (a key the database cannot hold) never reaches the write, where it would fail
    the rows written with it; each row is keyed by its own workspace."""
    rows = many(
        stored("ws-a", "resp_1", text=b"1"),
        stored("", "resp_2"),
        stored("ws-b", "resp_1", text=b"2"),
        stored("ws-a", "resp\x003"),
        stored("ws-a", "r" * 129),
        stored("ws-a", "resp_4", text=b"4"),
    )
    ack = await stub.KeepMany(rows, timeout=5)
    assert list(ack.results) == [KEPT, INVALID, KEPT, INVALID, INVALID, KEPT]
    assert sessions.opened == 1  # one transaction for the three
    assert found(reader, "ws-a", "resp_1") == stored(text=b"1").input_items
    assert found(reader, "ws-b", "resp_1") == stored(text=b"2").input_items
    assert found(reader, "ws-a", "resp_4") == stored(text=b"4").input_items
    with reader() as session:
        assert session.exec(select(func.count()).select_from(StoredResponse)).one() == 3
    assert list((await stub.KeepMany(many(), timeout=5)).results) == []


async def test_keep_many_rows_of_a_failed_write_are_unavailable(
    stub: responses_pb2_grpc.ResponseStoreStub, sessions: Sessions, reader: sessionmaker[Session]
) -> None:
    sessions.failing = True
    rows = many(stored("ws-a", "resp_1"), stored("", "resp_2"), stored("ws-a", "resp_3"))
    assert list((await stub.KeepMany(rows, timeout=5)).results) == [UNAVAILABLE, INVALID, UNAVAILABLE]
    sessions.failing = False
    assert list((await stub.KeepMany(rows, timeout=5)).results) == [KEPT, INVALID, KEPT]  # the retry
    assert found(reader, "ws-a", "resp_3") is not None


async def test_keep_many_over_the_shared_bounds_is_refused_whole(
    stub: responses_pb2_grpc.ResponseStoreStub, service: ResponseStoreService, reader: sessionmaker[Session]
) -> None:
    """ext_proc never sends one (it splits by the same rule): a client's bug, not a store failure."""
    too_many = many(*(stored("ws-a", f"resp_{i}") for i in range(65)))
    assert await code_of(stub.KeepMany(too_many, timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT
    large = b"1" * (3 << 20)
    two_large = many(stored("ws-a", "resp_a", text=large), stored("ws-a", "resp_b", text=large))
    with pytest.raises(Aborted) as refused:  # the servicer's own check (gRPC's 4 MiB would refuse it first)
        await service.KeepMany(two_large, cast(grpc.aio.ServicerContext, Context()))
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with reader() as session:
        assert session.exec(select(func.count()).select_from(StoredResponse)).one() == 0
    one_large = many(stored("ws-a", "resp_a", text=b"1" * (5 << 20)))  # one larger row goes alone
    ack = await service.KeepMany(one_large, cast(grpc.aio.ServicerContext, Context()))
    assert list(ack.results) == [KEPT]


async def test_keep_and_keep_many_rows_are_written_together(
    service: ResponseStoreService, sessions: Sessions, reader: sessionmaker[Session]
) -> None:
    """One group commit serves both: a KeepMany arriving during a Keep's write joins the next."""
    sessions.hold = hold = threading.Event()
    first = asyncio.ensure_future(keep(service, stored("ws-a", "resp_0")))
    assert await asyncio.to_thread(sessions.held.wait, 10)
    context = cast(grpc.aio.ServicerContext, Context())
    batch = asyncio.ensure_future(
        service.KeepMany(many(*(stored("ws-a", f"resp_{i}") for i in range(1, 6))), context)
    )
    alone = asyncio.ensure_future(keep(service, stored("ws-b", "resp_1")))
    await settle()
    hold.set()
    assert await first is None and await alone is None
    assert list((await batch).results) == [KEPT] * 5
    assert sessions.opened == 2
    assert found(reader, "ws-b", "resp_1") is not None
