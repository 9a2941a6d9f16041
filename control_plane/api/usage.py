"""/admin/v1/usage: breakdowns and single-request records."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from control_plane.resources import usage
from control_plane.schemas import UsageRecordList, UsageRecordOut, UsageReport
from control_plane.store.db import SessionFactory


def router(session_factory: SessionFactory) -> APIRouter:
    api = APIRouter(prefix="/usage", tags=["usage"])

    @api.get("", response_model=UsageReport)
    def usage_report(
        workspace: Annotated[str | None, Query(description="workspace name or id")] = None,
        key: Annotated[str | None, Query(description="key id")] = None,
        member: Annotated[str | None, Query(description="member id or email")] = None,
        model: Annotated[str | None, Query(description="slug that served the request")] = None,
        start: Annotated[str | None, Query(alias="from", description="ISO-8601 date or datetime")] = None,
        end: Annotated[
            str | None, Query(alias="to", description="ISO-8601 date (whole day included) or datetime")
        ] = None,
        group_by: Annotated[
            Literal["key", "model", "member", "day", "endpoint", "batch"] | None, Query()
        ] = None,
        endpoint: Annotated[
            str | None, Query(description="the path the client called, e.g. /v1/audio/speech")
        ] = None,
        batch: Annotated[str | None, Query(description="a batch id: its lines' requests only")] = None,
    ) -> UsageReport:
        """Sums per group; without `group_by`, one `total` row (none when nothing matched).
        ``group_by=batch``: one row per batch id (requests of no batch under ``""``)."""
        query = usage.UsageQuery(workspace, key, member, model, start, end, group_by, endpoint, batch)
        with session_factory() as session:
            return UsageReport(rows=usage.report(session, query))

    @api.get("/requests/{request_id}", response_model=UsageRecordOut)
    def usage_record(request_id: str) -> UsageRecordOut:
        with session_factory() as session:
            return usage.record_out(usage.get_record(session, request_id))

    @api.get("/requests/{request_id}/choices", response_model=UsageRecordList)
    def usage_extra_choices(request_id: str) -> UsageRecordList:
        """The records of the extra choices of an emulated `n > 1` (each made by the gateway for
        the client's request `request_id`, with its own charge), oldest first."""
        with session_factory() as session:
            return UsageRecordList(
                data=[usage.record_out(r) for r in usage.extra_choices(session, request_id)]
            )

    return api
