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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
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


@dataclass(frozen=True, slots=True)
class Kept:
    """A kept response, as the store answers it."""

    response: bytes  # the response object's JSON
    input_items: bytes  # JSON array


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
        self.keep_failures = 0  # answers finally not kept, retries spent (for metrics and tests)
        self.keep_retries = 0  # keeps tried again (for tests)

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
        """One try; None when kept, else why not."""
        try:
            await self._client().Keep(record, timeout=self._timeout_s, metadata=self._metadata)
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


def _unavailable(err: grpc.aio.AioRpcError) -> GatewayError:
    log.warning("the response store failed: %s", err.code().name)
    return GatewayError(
        503, "responses_unavailable", "The gateway's stored responses are unavailable; retry later."
    )
