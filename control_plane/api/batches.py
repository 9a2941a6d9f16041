"""/admin/v1/batches: every workspace's batches with their progress, for operators and the dashboard.

Read-only: clients create and cancel batches through ``/v1/batches`` (control_plane/batches/api.py).
Each entry is OpenAI's batch object (with ``credits_used``) plus its workspace's name.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlmodel import col, select

from control_plane.batches import records
from control_plane.store.db import SessionFactory
from control_plane.store.tables import Batch, Workspace

MAX_LIMIT = 100


def router(session_factory: SessionFactory) -> APIRouter:
    api = APIRouter(prefix="/batches", tags=["batches"])

    @api.get("")
    def list_batches(
        workspace: Annotated[str | None, Query(description="workspace name")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    ) -> dict[str, list[dict[str, Any]]]:
        """The newest batches first, with their request counts (progress) and credits."""
        with session_factory() as session:
            names = dict(session.exec(select(Workspace.id, Workspace.name)).all())
            query = select(Batch).order_by(col(Batch.id).desc()).limit(limit)
            if workspace:
                ids = [wid for wid, name in names.items() if name == workspace]
                query = query.where(col(Batch.workspace_id).in_(ids))
            now_ms = int(time.time() * 1000)
            data = [
                {
                    **records.describe(session, row, now_ms),
                    "workspace": names.get(row.workspace_id, row.workspace_id),
                }
                for row in session.exec(query)
            ]
        return {"data": data}

    return api
