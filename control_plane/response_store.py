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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc
from infery_proto.v1 import responses_pb2, responses_pb2_grpc
from sqlmodel import col, delete

from control_plane.store import bulk_sql
from control_plane.store.db import SessionFactory
from control_plane.store.tables import StoredResponse

log = logging.getLogger(__name__)

DAY_S = 86_400
_TABLE = StoredResponse.__table__  # type: ignore[attr-defined]
SWEEP_INTERVAL_S = 3600.0


class ResponseStoreService(responses_pb2_grpc.ResponseStoreServicer):
    def __init__(
        self, session_factory: SessionFactory, retention_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._sessions = session_factory
        self._retention_s = retention_s
        self._clock = clock

    async def Keep(
        self, request: responses_pb2.StoredResponse, context: grpc.aio.ServicerContext
    ) -> responses_pb2.KeepAck:
        if not request.workspace_id or not request.id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "a stored response needs a workspace and an id"
            )
        try:
            await asyncio.to_thread(self._keep, request)
        except Exception:
            log.exception("keeping response %s failed", request.id)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the response store is unavailable")
        return responses_pb2.KeepAck()

    async def Find(
        self, request: responses_pb2.ResponseRef, context: grpc.aio.ServicerContext
    ) -> responses_pb2.StoredResponse:
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
        try:
            deleted = await asyncio.to_thread(self._forget, request.workspace_id, request.id)
        except Exception:
            log.exception("forgetting response %s failed", request.id)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the response store is unavailable")
        return responses_pb2.ForgetAck(deleted=deleted)

    def _keep(self, request: responses_pb2.StoredResponse) -> None:
        now = int(self._clock())
        row = (
            request.workspace_id,
            request.id,
            request.model,
            request.created_at or now,
            now + int(self._retention_s),
            request.response,
            request.input_items,
        )
        with self._sessions() as session:
            bulk_sql.upsert_replacing(session.connection(), _TABLE, [row])
            session.commit()

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
