"""ext_proc's client of the control plane's response store (``infery.v1.ResponseStore``).

Over the channel every call to the control plane uses (its private gRPC port, mutual TLS or
its token: ext_proc/control_plane_channel.py). Called at request time, so each call is
bounded: a store that does not answer in :data:`TIMEOUT_S` is unavailable, and the client
gets ``503 responses_unavailable`` where the store was needed (``previous_response_id``,
GET/DELETE /v1/responses/{id}). Keeping an answer is never allowed to fail the answer: a
response that could not be kept is logged and counted, and the client still gets it.

A keep that fails for a reason that may pass (the store unavailable, a deadline, a reset)
is tried again in the background, a bounded number of times with growing pauses
(:data:`RETRY_DELAYS_S`, about 15 s in all): the answer is not held for it (its message is
bounded by Envoy's ext_proc message timeout), and a control plane restarting or a database
failing over for a few seconds loses no response. Keep is an upsert keyed by workspace and
id, so a retry after a keep that did land but whose answer was lost changes nothing. Only a
response finally lost is counted (``infery_responses_not_kept_total``).

Keeps are batched: a gRPC call costs this process ~200 µs of CPU and the control plane ~600 µs,
far more than a row's share, and concurrent answers finish together. With no ``KeepMany`` in
flight a keep is sent at once (no wait added to a lone request); while one is in flight, keeps
queue and the next call carries them all, within the bounds both sides share
(``infery_proto.response_batches``). A batch's deadline is its oldest keep's (:data:`TIMEOUT_S`
from when it was queued), so no keep waits longer than it would have alone. The calls are made
by a task of their own: a caller cancelled (its client hung up) cancels no one else's keep, and
its own row is still sent. Each row is answered for itself: kept; invalid (lost, not tried
again); unavailable (tried again, through the batcher too). A control plane older than
``KeepMany`` answers UNIMPLEMENTED: then every keep goes through ``Keep``, one call a row, for
the rest of the process's life (a rolling upgrade replaces this process soon enough).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from infery_proto import response_batches
from infery_proto.v1 import responses_pb2, responses_pb2_grpc

from ext_proc.control_plane_channel import open_channel
from ext_proc.errors import GatewayError

log = logging.getLogger("infery.ext_proc")

TIMEOUT_S = 3.0
# The pauses before each retry of a keep that failed for a reason that may pass.
RETRY_DELAYS_S = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
_RETRIABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.CANCELLED,
    }
)
# A KeepMany row's result as the status its own Keep would have had (a result this process does
# not know, from a newer control plane, as unavailable: tried again).
_RESULT_CODES: dict[int, grpc.StatusCode | None] = {
    responses_pb2.KEEP_RESULT_KEPT: None,
    responses_pb2.KEEP_RESULT_INVALID: grpc.StatusCode.INVALID_ARGUMENT,
    responses_pb2.KEEP_RESULT_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
}


@dataclass(frozen=True, slots=True)
class Kept:
    """A kept response, as the store answers it."""

    response: bytes  # the response object's JSON
    input_items: bytes  # JSON array


@dataclass(slots=True)
class _Queued:
    """A keep waiting for its call: its row, the row's size in a batch, when it stops waiting
    (monotonic), and its outcome (None kept, else why not)."""

    record: responses_pb2.StoredResponse
    size: int
    deadline: float
    outcome: asyncio.Future[grpc.StatusCode | None]


def required(store: ResponseStore | None) -> ResponseStore:
    """The process's store, where a request needs one; ``503 responses_unavailable`` without."""
    if store is None:
        raise GatewayError(503, "responses_unavailable", "The gateway keeps no responses here.")
    return store


class ResponseStore:
    """One per process; the channel opens lazily (its first call)."""

    def __init__(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout_s: float = TIMEOUT_S,
        retry_delays_s: Sequence[float] = RETRY_DELAYS_S,
    ) -> None:
        self._target = target
        self._credentials = credentials
        self._metadata = tuple(metadata)
        self._timeout_s = timeout_s
        self._retry_delays_s = tuple(retry_delays_s)
        self._stub: responses_pb2_grpc.ResponseStoreStub | None = None
        self._retries: set[asyncio.Task[None]] = set()  # keeps being tried again, referenced until done
        self._queue: deque[_Queued] = deque()  # keeps waiting for the next KeepMany
        self._sender: asyncio.Task[None] | None = None  # sends the queue's batches, one call at a time
        self.keep_failures = 0  # answers finally not kept, retries spent (for metrics and tests)
        self.keep_retries = 0  # keeps tried again (for tests)
        self.keep_rpcs = 0  # KeepMany and Keep calls made (for the bench and tests)
        self.keep_many_unimplemented = False  # the control plane is older than KeepMany: Keep a row

    def _client(self) -> responses_pb2_grpc.ResponseStoreStub:
        if self._stub is None:
            channel = open_channel(self._target, self._credentials)
            self._stub = responses_pb2_grpc.ResponseStoreStub(channel)  # type: ignore[no-untyped-call]
        return self._stub

    async def keep(
        self, workspace_id: str, response_id: str, model: str, created_at: int, response: bytes, items: bytes
    ) -> bool:
        """Keep a response; False when this first try failed (logged). A failure that may pass is
        tried again in the background (:data:`RETRY_DELAYS_S`); what is finally lost is counted."""
        record = responses_pb2.StoredResponse(
            workspace_id=workspace_id,
            id=response_id,
            model=model,
            created_at=created_at,
            response=response,
            input_items=items,
        )
        code = await self._keep_once(record)
        if code is None:
            return True
        if code in _RETRIABLE and self._retry_delays_s:
            log.warning("response %s was not kept (%s); trying again", response_id, code.name)
            task = asyncio.ensure_future(self._keep_again(record))
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)
        else:
            self._lost(response_id, code)
        return False

    async def _keep_once(self, record: responses_pb2.StoredResponse) -> grpc.StatusCode | None:
        """One try, in the next KeepMany (sent at once when none is in flight); None when kept,
        else why not. A caller cancelled cancels its outcome only: the sender is a task of its own,
        and sends the row still (answering no one)."""
        if self.keep_many_unimplemented:
            return await self._keep_alone(record, self._timeout_s)
        outcome: asyncio.Future[grpc.StatusCode | None] = asyncio.get_running_loop().create_future()
        size = response_batches.size_of(record)
        self._queue.append(_Queued(record, size, time.monotonic() + self._timeout_s, outcome))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_queued())
        return await outcome

    async def _send_queued(self) -> None:
        """Send the queue, one call in flight at a time: each call takes what queued meanwhile,
        within the shared bounds, with the deadline of its oldest keep; a keep whose deadline
        passed while it waited fails as its own call would have (DEADLINE_EXCEEDED), unsent."""
        batch: list[_Queued] = []
        try:
            while self._queue:
                now = time.monotonic()
                while self._queue and self._queue[0].deadline <= now:  # the oldest are first
                    _answer([self._queue.popleft()], grpc.StatusCode.DEADLINE_EXCEEDED)
                if not self._queue:
                    break
                count = response_batches.take(queued.size for queued in self._queue)
                batch = [self._queue.popleft() for _ in range(count)]
                try:
                    codes = await self._send([q.record for q in batch], batch[0].deadline - now)
                except Exception:  # a bug here must not leave callers waiting
                    log.exception("keeping %d responses failed", len(batch))
                    codes = [grpc.StatusCode.UNKNOWN] * len(batch)
                for queued, code in zip(batch, codes, strict=True):
                    _answer([queued], code)
                batch = []
        finally:
            self._sender = None
            _answer([*batch, *self._queue], grpc.StatusCode.CANCELLED)  # the loop is closing
            self._queue.clear()

    async def _send(
        self, records: list[responses_pb2.StoredResponse], timeout_s: float
    ) -> list[grpc.StatusCode | None]:
        """One KeepMany of ``records``; each one's outcome, in order. Through Keep, a call a row,
        once the control plane has answered that it has no KeepMany."""
        if not self.keep_many_unimplemented:
            self.keep_rpcs += 1
            batch = responses_pb2.StoredResponses(responses=records)
            try:
                ack = await self._client().KeepMany(batch, timeout=timeout_s, metadata=self._metadata)
            except grpc.aio.AioRpcError as err:
                if err.code() != grpc.StatusCode.UNIMPLEMENTED:
                    return [err.code()] * len(records)
                self.keep_many_unimplemented = True
                log.warning(
                    "the control plane has no KeepMany (older than this ext_proc): keeping through Keep"
                )
            else:
                if len(ack.results) != len(records):  # not an answer per row: as a failed call
                    return [grpc.StatusCode.INTERNAL] * len(records)
                return [_RESULT_CODES.get(result, grpc.StatusCode.UNAVAILABLE) for result in ack.results]
        return list(await asyncio.gather(*(self._keep_alone(record, timeout_s) for record in records)))

    async def _keep_alone(
        self, record: responses_pb2.StoredResponse, timeout_s: float
    ) -> grpc.StatusCode | None:
        """One Keep (a control plane older than KeepMany); None when kept, else why not."""
        self.keep_rpcs += 1
        try:
            await self._client().Keep(record, timeout=timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as err:
            return err.code()
        return None

    async def _keep_again(self, record: responses_pb2.StoredResponse) -> None:
        code: grpc.StatusCode | None = None
        for delay in self._retry_delays_s:
            await asyncio.sleep(delay)
            self.keep_retries += 1
            code = await self._keep_once(record)
            if code is None:
                log.info("response %s kept on a retry", record.id)
                return
            if code not in _RETRIABLE:
                break
        assert code is not None
        self._lost(record.id, code)

    def _lost(self, response_id: str, code: grpc.StatusCode) -> None:
        self.keep_failures += 1
        log.warning("response %s was not kept: %s", response_id, code.name)

    @property
    def retrying(self) -> int:
        """Keeps still being tried again."""
        return len(self._retries)

    async def find(self, workspace_id: str, response_id: str) -> Kept | None:
        """The workspace's response of that id; None when it has none (unknown, expired, another
        workspace's). Raises 503 ``responses_unavailable`` when the store does not answer."""
        ref = responses_pb2.ResponseRef(workspace_id=workspace_id, id=response_id)
        try:
            found = await self._client().Find(ref, timeout=self._timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _unavailable(err) from None
        return Kept(found.response, found.input_items)

    async def forget(self, workspace_id: str, response_id: str) -> bool:
        """Delete the workspace's response of that id; whether there was one."""
        ref = responses_pb2.ResponseRef(workspace_id=workspace_id, id=response_id)
        try:
            ack = await self._client().Forget(ref, timeout=self._timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as err:
            raise _unavailable(err) from None
        return bool(ack.deleted)


def _answer(keeps: Sequence[_Queued], code: grpc.StatusCode | None) -> None:
    """Give these keeps their outcome (a caller that gave up is not waiting: no one reads it)."""
    for queued in keeps:
        if not queued.outcome.done():
            queued.outcome.set_result(code)


def _unavailable(err: grpc.aio.AioRpcError) -> GatewayError:
    log.warning("the response store failed: %s", err.code().name)
    return GatewayError(
        503, "responses_unavailable", "The gateway's stored responses are unavailable; retry later."
    )
