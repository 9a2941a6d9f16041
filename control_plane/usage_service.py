"""gRPC ingestion of usage records from ext_proc (`infery.v1.UsageService/Report`).

Delivery is at least once, so storage is exactly once per request_id. The ack is sent
only after the batch is committed: an error makes ext_proc keep the batch and retry.
Database work runs in a worker thread so the server's event loop never blocks on it.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from infery_proto.v1 import usage_pb2, usage_pb2_grpc

from control_plane.metrics import ControlPlaneMetrics
from control_plane.resources import usage
from control_plane.store.db import SessionFactory

log = logging.getLogger(__name__)


class UsageService(usage_pb2_grpc.UsageServiceServicer):
    def __init__(self, session_factory: SessionFactory, metrics: ControlPlaneMetrics | None = None) -> None:
        self._session_factory = session_factory
        self._metrics = metrics

    async def Report(
        self, request: usage_pb2.UsageBatch, context: grpc.aio.ServicerContext
    ) -> usage_pb2.UsageAck:
        records = list(request.records)
        try:
            stored, duplicates = await asyncio.to_thread(self._store, records)
        except Exception:
            log.exception("storing %d usage records failed; ext_proc will retry", len(records))
            if self._metrics:
                self._metrics.usage_failures.inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, "usage store unavailable, retry later")
        if self._metrics:
            self._metrics.ingested(stored, duplicates)
        return usage_pb2.UsageAck(stored=stored, duplicates=duplicates)

    def _store(self, records: list[usage_pb2.UsageRecord]) -> tuple[int, int]:
        with self._session_factory() as session:
            result = usage.store(session, records)
            session.commit()
        return result


def add_usage_service(
    server: grpc.aio.Server, session_factory: SessionFactory, metrics: ControlPlaneMetrics | None = None
) -> None:
    """Register the usage servicer on a grpc.aio server (e.g. the xDS server's)."""
    usage_pb2_grpc.add_UsageServiceServicer_to_server(UsageService(session_factory, metrics), server)  # type: ignore[no-untyped-call]
