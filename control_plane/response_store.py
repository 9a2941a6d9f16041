"""gRPC store of the Responses API's kept responses (``infery.v1.ResponseStore``), for ext_proc.

Why here and over gRPC: a stored response is a small JSON document that ext_proc itself
writes (when it answers, before the client hears the end, so that the next turn finds it on
any replica) and reads (``previous_response_id``, GET/DELETE /v1/responses/{id}) at request
time. The control plane already holds the SQL store and serves ext_proc on its private gRPC
port (xDS, usage reports) with mutual TLS or a token; one more service there, defined in
``proto/``, keeps ext_proc and the control plane apart and needs no new port or credential.

Every call names a workspace, and rows are found by workspace and id together: another
workspace's id is NOT_FOUND, as an unknown or expired one. The expiry is this side's
(``INFERY_RESPONSES_RETENTION_DAYS``, 30 days): expired rows are never answered, and
:func:`sweep_forever` deletes them. Database work runs in a worker thread.

Keep runs once per Responses API request (``store`` is OpenAI's default), and ext_proc waits for
its ack before the client hears the end of its answer, so an ack means committed. It is an upsert
by workspace and id (a retry changes nothing), in the driver's own SQL (``bulk_sql``), and written
by group commit (:class:`_Keeper`): keeps that arrive while a write is in flight are written
together, in one transaction, by the next, and each is acked only once that transaction has
committed; a write that fails fails every keep it carried with UNAVAILABLE (ext_proc tries them
again). A request the database could not hold (an id longer than its column) is refused with
INVALID_ARGUMENT before it reaches a write, where it would fail every keep written with it.

KeepMany carries many keeps in one call (ext_proc batches those that arrive while one call is in
flight: a gRPC call costs several hundred µs here, far more than a row's share of a write) and
answers per row, in order: kept, invalid (refused as Keep refuses it, never written) or
unavailable (its write failed). Its rows join the same group commit as Keep's; Keep is KeepMany
of one row, kept for ext_procs older than KeepMany. Both sides bound a batch by
``infery_proto.response_batches``; a KeepMany over those bounds is a client's bug, refused whole
with INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence

import grpc
from infery_proto import response_batches
from infery_proto.v1 import responses_pb2, responses_pb2_grpc
from sqlmodel import col, delete

from control_plane.store import bulk_sql
from control_plane.store.db import SessionFactory
from control_plane.store.tables import StoredResponse

log = logging.getLogger(__name__)

DAY_S = 86_400
SWEEP_INTERVAL_S = 3600.0
# One write carries at most this many keeps, and this many bytes of them (one larger keep goes
# alone): bounds a transaction's time and a statement's size when many keeps pile up. The same
# bounds as a KeepMany's (one rule, in infery_proto).
BATCH_ROWS = response_batches.BATCH_ROWS
BATCH_BYTES = response_batches.BATCH_BYTES
_KEPT, _INVALID, _UNAVAILABLE = (
    responses_pb2.KEEP_RESULT_KEPT,
    responses_pb2.KEEP_RESULT_INVALID,
    responses_pb2.KEEP_RESULT_UNAVAILABLE,
)

_TABLE = StoredResponse.__table__  # type: ignore[attr-defined]
# A row in the table's column order: workspace_id, id, model, created_at, expires_at, response, input_items.
_Row = tuple[str, str, str, int, int, bytes, bytes]
_COLUMNS = ("workspace_id", "id", "model", "created_at", "expires_at", "response", "input_items")
if tuple(column.name for column in _TABLE.columns) != _COLUMNS:
    raise RuntimeError(f"kept rows are {_COLUMNS}, the table's columns {[c.name for c in _TABLE.columns]}")
_WORKSPACE_WIDTH, _ID_WIDTH, _MODEL_WIDTH = (_TABLE.columns[name].type.length for name in _COLUMNS[:3])


class ResponseStoreService(responses_pb2_grpc.ResponseStoreServicer):
    def __init__(
        self,
        session_factory: SessionFactory,
        retention_s: float,
        clock: Callable[[], float] = time.time,
        *,
        batch_rows: int = BATCH_ROWS,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        self._sessions = session_factory
        self._retention_s = int(retention_s)
        self._clock = clock
        self._keeper = _Keeper(session_factory, batch_rows, batch_bytes)

    @property
    def keep_batches(self) -> int:
        """Transactions that keeps were written in (for the bench and tests)."""
        return self._keeper.transactions

    async def Keep(
        self, request: responses_pb2.StoredResponse, context: grpc.aio.ServicerContext
    ) -> responses_pb2.KeepAck:
        (result,) = await self._keep([request], [response_batches.size_of(request)])
        if result == _INVALID:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, _invalid(request.workspace_id, request.id) or ""
            )
        elif result == _UNAVAILABLE:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the response store is unavailable")
        return responses_pb2.KeepAck()

    async def KeepMany(
        self, request: responses_pb2.StoredResponses, context: grpc.aio.ServicerContext
    ) -> responses_pb2.KeepManyAck:
        sizes = [response_batches.size_of(row) for row in request.responses]
        if not response_batches.within(sizes):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"a KeepMany carries at most {response_batches.BATCH_ROWS} responses"
                f" and {response_batches.BATCH_BYTES} bytes (one larger response alone)",
            )
        return responses_pb2.KeepManyAck(results=await self._keep(request.responses, sizes))

    async def _keep(
        self, requests: Sequence[responses_pb2.StoredResponse], sizes: Sequence[int]
    ) -> list[responses_pb2.KeepResult]:
        """Keep each request (of its size in a batch; one group commit for them all); its result,
        in order. A request the database could not hold is refused here, before it reaches a write."""
        now = int(self._clock())
        results = [_INVALID if _invalid(r.workspace_id, r.id) else _KEPT for r in requests]
        valid = [
            (r, size) for r, size, result in zip(requests, sizes, results, strict=True) if result == _KEPT
        ]
        rows = [
            (
                (
                    r.workspace_id,
                    r.id,
                    r.model[:_MODEL_WIDTH].replace("\x00", ""),  # informational: never worth refusing
                    r.created_at or now,
                    now + self._retention_s,
                    r.response,
                    r.input_items,
                ),
                size,
            )
            for r, size in valid
        ]
        kept = iter(await self._keeper.keep(rows))
        return [next(kept) if result == _KEPT else result for result in results]

    async def Find(
        self, request: responses_pb2.ResponseRef, context: grpc.aio.ServicerContext
    ) -> responses_pb2.StoredResponse:
        if _invalid(request.workspace_id, request.id):  # the client's id: no row has it
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such response")
        try:
            row = await asyncio.to_thread(self._find, request.workspace_id, request.id)
        except Exception:
            log.exception("finding response %s failed", request.id)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the response store is unavailable")
        if row is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such response")
        assert row is not None
        return responses_pb2.StoredResponse(
            workspace_id=row.workspace_id,
            id=row.id,
            model=row.model,
            created_at=row.created_at,
            expires_at=row.expires_at,
            response=row.response,
            input_items=row.input_items,
        )

    async def Forget(
        self, request: responses_pb2.ResponseRef, context: grpc.aio.ServicerContext
    ) -> responses_pb2.ForgetAck:
        if _invalid(request.workspace_id, request.id):  # the client's id: no row has it
            return responses_pb2.ForgetAck(deleted=False)
        try:
            deleted = await asyncio.to_thread(self._forget, request.workspace_id, request.id)
        except Exception:
            log.exception("forgetting response %s failed", request.id)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the response store is unavailable")
        return responses_pb2.ForgetAck(deleted=deleted)

    def _find(self, workspace_id: str, response_id: str) -> StoredResponse | None:
        with self._sessions() as session:
            row = session.get(StoredResponse, (workspace_id, response_id))
            if row is None or row.expires_at <= self._clock():
                return None
            session.expunge(row)
            return row

    def _forget(self, workspace_id: str, response_id: str) -> bool:
        with self._sessions() as session:
            row = session.get(StoredResponse, (workspace_id, response_id))
            if row is None or row.expires_at <= self._clock():
                return False
            session.delete(row)
            session.commit()
            return True

    def sweep(self) -> int:
        """Delete every expired response; how many."""
        with self._sessions() as session:
            result = session.exec(
                delete(StoredResponse).where(col(StoredResponse.expires_at) <= int(self._clock()))
            )
            session.commit()
            return int(result.rowcount or 0)


def _invalid(workspace_id: str, response_id: str) -> str | None:
    """Why the database could not hold this key, if it could not: a keep of it is refused, and
    no row has it (a Find or Forget of it, which PostgreSQL would fail on a NUL, finds none)."""
    if not workspace_id or not response_id:
        return "a stored response needs a workspace and an id"
    if len(workspace_id) > _WORKSPACE_WIDTH or len(response_id) > _ID_WIDTH:
        return f"a workspace id is at most {_WORKSPACE_WIDTH} characters, a response id {_ID_WIDTH}"
    if "\x00" in workspace_id or "\x00" in response_id:
        return "a workspace or response id cannot contain NUL"
    return None


class NotKept(Exception):
    """The write that carried a keep failed (logged once, by the writer); the keep is not stored."""


class _Keeper:
    """Group commit of kept rows: one write in flight at a time, on a worker thread; the keeps
    that arrive meanwhile wait, and the next write takes them together (up to its bounds).

    Why: each transaction costs the thread hand-off, a session, a statement and a commit whatever
    it carries, and concurrent answers finish together, so under load one write serves many keeps.
    A keep alone is written at once: grouping adds no wait, only what a write in flight already
    costs. The writes are in arrival order, so of two keeps of one key the later one stays.
    """

    def __init__(self, sessions: SessionFactory, batch_rows: int, batch_bytes: int) -> None:
        self._sessions = sessions
        self._batch_rows = batch_rows
        self._batch_bytes = batch_bytes
        self._waiting: deque[tuple[_Row, int, asyncio.Future[None]]] = deque()
        self._writer: asyncio.Task[None] | None = None
        self.transactions = 0

    async def keep(self, rows: Sequence[tuple[_Row, int]]) -> list[responses_pb2.KeepResult]:
        """Return once every row (with its size) is written: each one's result, kept or
        unavailable (its write failed)."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in rows]
        self._waiting.extend((row, size, future) for (row, size), future in zip(rows, futures, strict=True))
        if futures and self._writer is None:
            self._writer = asyncio.create_task(self._write_waiting())
        done = await asyncio.gather(*futures, return_exceptions=True)
        return [_UNAVAILABLE if isinstance(outcome, BaseException) else _KEPT for outcome in done]

    async def _write_waiting(self) -> None:
        batch: list[tuple[_Row, int, asyncio.Future[None]]] = []
        try:
            while self._waiting:
                batch = self._take()
                try:
                    await asyncio.to_thread(self._write, [row for row, _, _ in batch])
                except Exception:
                    log.exception("keeping %d responses failed", len(batch))
                    _settle(batch, NotKept)
                else:
                    _settle(batch, None)
        finally:
            self._writer = None
            _settle(batch, NotKept)  # cancelled (the server is stopping): no caller waits forever
            _settle(self._waiting, NotKept)
            self._waiting.clear()

    def _take(self) -> list[tuple[_Row, int, asyncio.Future[None]]]:
        """The next write's keeps: the first waiting, and those after it within the bounds."""
        count = response_batches.take(
            (size for _, size, _ in self._waiting), self._batch_rows, self._batch_bytes
        )
        return [self._waiting.popleft() for _ in range(count)]

    def _write(self, rows: list[_Row]) -> None:
        """One transaction (worker thread): a key kept twice in ``rows`` is written once, as last kept."""
        latest = {row[:2]: row for row in rows}
        with self._sessions() as session:
            bulk_sql.upsert_replacing(session.connection(), _TABLE, [latest[key] for key in sorted(latest)])
            session.commit()
        self.transactions += 1


def _settle(
    batch: deque[tuple[_Row, int, asyncio.Future[None]]] | list[tuple[_Row, int, asyncio.Future[None]]],
    failure: type[Exception] | None,
) -> None:
    """Answer every caller of ``batch`` still waiting (a caller that gave up has a done future)."""
    for _, _, future in batch:
        if future.done():
            continue
        if failure is None:
            future.set_result(None)
        else:
            future.set_exception(failure())


async def sweep_forever(service: ResponseStoreService, interval_s: float = SWEEP_INTERVAL_S) -> None:
    """Delete expired responses now and every ``interval_s``, until cancelled."""
    while True:
        try:
            swept = await asyncio.to_thread(service.sweep)
            if swept:
                log.info("deleted %d expired stored responses", swept)
        except Exception:
            log.exception("sweeping expired stored responses failed; will retry")
        await asyncio.sleep(interval_s)


def add_response_store(server: grpc.aio.Server, service: ResponseStoreService) -> None:
    """Register the store on a grpc.aio server (the xDS server's)."""
    responses_pb2_grpc.add_ResponseStoreServicer_to_server(service, server)  # type: ignore[no-untyped-call]
