"""Deletes expired files and abandoned uploads: the bytes first, then the row.

An expired file is already invisible (every query hides it); this reclaims its storage.
An upload whose row is still ``uploading`` long after it began was interrupted without
cleaning up (a crash, a killed process): its partial bytes, if any, go the same way.
A failure leaves the row, so the next round tries again. An expired file's freed bytes are
recorded with the row's removal (control_plane/files/usage_records.py); an abandoned upload
stored nothing, and a client's delete was recorded when asked.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from control_plane.files import records, usage_records
from control_plane.files.settings import ABANDONED_AFTER_S
from control_plane.safe_errors import describe

if TYPE_CHECKING:
    from control_plane.files.app import FilesService

log = logging.getLogger("infery.files")


async def sweep_once(service: FilesService) -> int:
    """One round; how many files went."""
    now = int(service.clock())
    rows = await run_in_threadpool(records.due_for_sweeping, service.sessions, now, now - ABANDONED_AFTER_S)
    for row in rows:
        await service.storage.delete(row.storage_key)
        expired = usage_records.expiry(row, service.clock()) if row.status == records.PROCESSED else None
        await run_in_threadpool(records.forget, service.sessions, row.id, expired)
        service.metrics.deleted.labels("abandoned" if row.status == records.UPLOADING else "expired").inc()
    return len(rows)


async def sweep_forever(service: FilesService) -> None:
    """A round every ``sweep_interval_s``; a full round is followed by another at once."""
    while True:
        try:
            if await sweep_once(service) >= records.SWEEP_BATCH:
                continue
        except Exception as exc:
            log.warning(
                "sweeping expired files failed (next round in %ss): %s",
                service.settings.files_sweep_interval_s,
                describe(exc),
            )
        await asyncio.sleep(service.settings.files_sweep_interval_s)
