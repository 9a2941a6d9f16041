"""/admin/v1/workspaces, with their members, keys and stored files."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from control_plane.files import records
from control_plane.resources import keys, workspaces
from control_plane.schemas import (
    KeyCreated,
    KeyIn,
    KeyOut,
    MemberIn,
    MemberOut,
    StoredFileList,
    StoredFileOut,
    WorkspaceIn,
    WorkspaceOut,
    WorkspaceUpdate,
)
from control_plane.store.changes import mutation
from control_plane.store.db import SessionFactory
from control_plane.store.tables import StoredFile


def router(session_factory: SessionFactory) -> APIRouter:
    api = APIRouter(prefix="/workspaces", tags=["workspaces"])

    @api.get("", response_model=dict[str, list[WorkspaceOut]])
    def list_workspaces() -> dict[str, list[WorkspaceOut]]:
        with session_factory() as session:
            return {"data": [workspaces.to_out(row) for row in workspaces.list_all(session)]}

    @api.post("", status_code=201, response_model=WorkspaceOut)
    def create_workspace(body: WorkspaceIn) -> WorkspaceOut:
        with mutation(session_factory) as session:
            row = workspaces.create(session, body)
        return workspaces.to_out(row)

    @api.get("/{name}", response_model=WorkspaceOut)
    def get_workspace(name: str) -> WorkspaceOut:
        with session_factory() as session:
            return workspaces.to_out(workspaces.get(session, name))

    @api.put("/{name}", response_model=WorkspaceOut)
    def update_workspace(name: str, body: WorkspaceUpdate) -> WorkspaceOut:
        with mutation(session_factory) as session:
            row = workspaces.update(session, name, body)
        return workspaces.to_out(row)

    @api.delete("/{name}", status_code=204)
    def delete_workspace(name: str) -> Response:
        """Deletes its members and keys too; usage records are kept."""
        with mutation(session_factory) as session:
            workspaces.delete(session, name)
        return Response(status_code=204)

    @api.get("/{name}/members", response_model=dict[str, list[MemberOut]], tags=["members"])
    def list_members(name: str) -> dict[str, list[MemberOut]]:
        with session_factory() as session:
            workspace = workspaces.get(session, name)
            return {"data": [workspaces.member_out(m) for m in workspaces.list_members(session, workspace)]}

    @api.post("/{name}/members", status_code=201, response_model=MemberOut, tags=["members"])
    def add_member(name: str, body: MemberIn) -> MemberOut:
        with mutation(session_factory) as session:
            row = workspaces.add_member(session, workspaces.get(session, name), body)
        return workspaces.member_out(row)

    @api.delete("/{name}/members/{member}", status_code=204, tags=["members"])
    def remove_member(name: str, member: str) -> Response:
        """`member` is an id or an email; the member's keys are deleted with them."""
        with mutation(session_factory) as session:
            workspaces.remove_member(session, workspaces.get(session, name), member)
        return Response(status_code=204)

    @api.get("/{name}/keys", response_model=dict[str, list[KeyOut]], tags=["keys"])
    def list_keys(name: str) -> dict[str, list[KeyOut]]:
        with session_factory() as session:
            workspace = workspaces.get(session, name)
            return {"data": [keys.to_out(k, m) for k, m in keys.list_for(session, workspace)]}

    @api.post("/{name}/keys", status_code=201, response_model=KeyCreated, tags=["keys"])
    def create_key(name: str, body: KeyIn) -> KeyCreated:
        """The answer's `key` is the only time the secret is ever shown."""
        with mutation(session_factory) as session:
            row, member, secret = keys.create(session, workspaces.get(session, name), body)
        return keys.to_created(row, member, secret)

    @api.get("/{name}/keys/{key_id}", response_model=KeyOut, tags=["keys"])
    def get_key(name: str, key_id: str) -> KeyOut:
        with session_factory() as session:
            return keys.to_out(*keys.get(session, workspaces.get(session, name), key_id))

    @api.delete("/{name}/keys/{key_id}", response_model=KeyOut, tags=["keys"])
    def revoke_key(name: str, key_id: str) -> KeyOut:
        """Revokes (the key stays listed with `revoked_at`); the data plane drops it within a second."""
        with mutation(session_factory) as session:
            row, member = keys.revoke(session, workspaces.get(session, name), key_id)
        return keys.to_out(row, member)

    @api.get("/{name}/files", response_model=StoredFileList, tags=["files"])
    def list_files(
        name: str,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        after: Annotated[str | None, Query(description="the last id of the previous page")] = None,
    ) -> StoredFileList:
        """The workspace's files (``/v1/files``), newest first, as its members see them (expired ones
        are gone): metadata only, never their bytes."""
        with session_factory() as session:
            workspace_id = workspaces.get(session, name).id
        found = records.page(
            session_factory,
            workspace_id,
            int(time.time()),
            purpose=None,
            limit=limit,
            after=after,
            ascending=False,
        )
        return StoredFileList(data=[_file_out(row) for row in found.rows], has_more=found.has_more)

    return api


def _file_out(row: StoredFile) -> StoredFileOut:
    expires = datetime.fromtimestamp(row.expires_at, UTC) if row.expires_at is not None else None
    return StoredFileOut(
        id=row.id,
        filename=row.filename,
        purpose=row.purpose,
        bytes=row.bytes,
        created_at=datetime.fromtimestamp(row.created_at, UTC),
        expires_at=expires,
        member=row.member_id,
        key_id=row.key_id,
    )
