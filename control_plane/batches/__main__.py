"""Run a batch worker: ``python -m control_plane.batches`` (console script ``infery-batch-worker``).

Settings come from the environment (control_plane/batches/settings.py; ``--help`` lists
them). Run as many as the load needs, on any host that reaches the store, the files
storage and an Envoy listener: they share the work through the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx

from control_plane.batches.settings import BatchSettings
from control_plane.batches.worker import Worker
from control_plane.files.storage import FileStorage
from control_plane.request_log import configure_logging
from control_plane.store.db import open_store
from control_plane.xds.data_plane_secret import batch_line_key

log = logging.getLogger("infery.batches")


async def serve(settings: BatchSettings) -> None:
    _engine, sessions = open_store(settings.database_url)
    with sessions() as session:
        key = batch_line_key(session)
    limits = httpx.Limits(
        max_connections=settings.batch_concurrency, max_keepalive_connections=settings.batch_concurrency
    )
    async with httpx.AsyncClient(timeout=settings.batch_request_timeout_s, limits=limits) as client:
        worker = Worker(settings, sessions, FileStorage(settings.storage_url), key, client)
        if settings.batch_metrics_port:
            worker.metrics.serve(settings.batch_metrics_port, settings.batch_metrics_host)
        log.info(
            "ready batch worker %s: lines through %s, %d in flight (%d per workspace)",
            worker.owner,
            settings.listener_url,
            settings.batch_concurrency,
            settings.batch_workspace_concurrency,
        )
        await worker.run()


def main(argv: list[str] | None = None) -> None:
    settings = BatchSettings.from_command_line(
        "python -m control_plane.batches",
        "A batch worker: runs /v1/batches through the gateway's listener.",
        argv,
    )
    configure_logging(settings.log_level, settings.log_format)
    # httpx logs every request at INFO: a line each, with nothing the batch's own log lacks.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
