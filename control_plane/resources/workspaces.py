"""Workspaces (limits, budget, price multiplier, allowed models) and their members."""

from __future__ import annotations

from sqlmodel import Session, col, select

from control_plane.errors import AlreadyExists, NotFound
from control_plane.resources import models
from control_plane.schemas import MemberIn, MemberOut, WorkspaceIn, WorkspaceOut, WorkspaceUpdate
from control_plane.store.tables import ApiKey, Member, Workspace


def to_out(row: Workspace) -> WorkspaceOut:
    return WorkspaceOut(
        id=row.id,
        name=row.name,
        rpm=row.rpm,
        tpm=row.tpm,
        budget_credits=row.budget_credits,
        budget_period=row.budget_period,
        price_multiplier=row.price_multiplier,
        allowed_models=list(row.allowed_models),
        share_idempotent_replays=row.share_idempotent_replays,
        batch_rpm=row.batch_rpm,
        batch_tpm=row.batch_tpm,
    )


def list_all(session: Session) -> list[Workspace]:
    return list(session.exec(select(Workspace).order_by(col(Workspace.name))))


def get(session: Session, name: str) -> Workspace:
    row = session.exec(select(Workspace).where(col(Workspace.name) == name)).first()
    if row is None:
        raise NotFound(f"workspace {name!r} does not exist", param="name")
    return row


def find(session: Session, name: str) -> Workspace | None:
    return session.exec(select(Workspace).where(col(Workspace.name) == name)).first()


def create(session: Session, body: WorkspaceIn) -> Workspace:
    if find(session, body.name) is not None:
        raise AlreadyExists(f"workspace {body.name!r} already exists", param="name")
    models.require_existing(session, body.allowed_models, param="allowed_models")
    row = Workspace(
        name=body.name,
        rpm=body.rpm,
        tpm=body.tpm,
        budget_credits=body.budget_credits,
        budget_period=body.budget_period,
        price_multiplier=body.price_multiplier,
        allowed_models=list(body.allowed_models),
        share_idempotent_replays=body.share_idempotent_replays,
        batch_rpm=body.batch_rpm,
        batch_tpm=body.batch_tpm,
    )
    session.add(row)
    return row


def update(session: Session, name: str, body: WorkspaceUpdate | WorkspaceIn) -> Workspace:
    """Apply the fields the body carries; a new `name` renames (the id stays)."""
    row = get(session, name)
    given = body.model_fields_set
    if body.name is not None and body.name != name:
        if find(session, body.name) is not None:
            raise AlreadyExists(f"workspace {body.name!r} already exists", param="name")
        row.name = body.name
    if "allowed_models" in given and body.allowed_models is not None:
        models.require_existing(session, body.allowed_models, param="allowed_models")
        row.allowed_models = list(dict.fromkeys(body.allowed_models))
    for field in (
        "rpm",
        "tpm",
        "budget_credits",
        "batch_rpm",
        "batch_tpm",
    ):  # null is meaningful: unlimited / no budget
        if field in given:
            setattr(row, field, getattr(body, field))
    for field in ("budget_period", "price_multiplier", "share_idempotent_replays"):  # null means "keep"
        if field in given and getattr(body, field) is not None:
            setattr(row, field, getattr(body, field))
    return row


def delete(session: Session, name: str) -> None:
    row = get(session, name)
    for key in session.exec(select(ApiKey).where(col(ApiKey.workspace_id) == row.id)):
        session.delete(key)
    for member in session.exec(select(Member).where(col(Member.workspace_id) == row.id)):
        session.delete(member)
    session.delete(row)


# --- members -----------------------------------------------------------------------------


def member_out(row: Member) -> MemberOut:
    return MemberOut(id=row.id, email=row.email, role=row.role)


def list_members(session: Session, workspace: Workspace) -> list[Member]:
    statement = select(Member).where(col(Member.workspace_id) == workspace.id).order_by(col(Member.email))
    return list(session.exec(statement))


def find_member(session: Session, workspace: Workspace, ref: str) -> Member | None:
    """A member of the workspace by id or (case-insensitive) email."""
    by_id = session.get(Member, ref)
    if by_id is not None and by_id.workspace_id == workspace.id:
        return by_id
    statement = select(Member).where(
        col(Member.workspace_id) == workspace.id, col(Member.email) == ref.strip().lower()
    )
    return session.exec(statement).first()


def get_member(session: Session, workspace: Workspace, ref: str) -> Member:
    member = find_member(session, workspace, ref)
    if member is None:
        raise NotFound(f"workspace {workspace.name!r} has no member {ref!r}", param="member")
    return member


def add_member(session: Session, workspace: Workspace, body: MemberIn) -> Member:
    if find_member(session, workspace, body.email) is not None:
        raise AlreadyExists(f"{body.email} is already a member of {workspace.name!r}", param="email")
    row = Member(workspace_id=workspace.id, email=body.email, role=body.role)
    session.add(row)
    return row


def remove_member(session: Session, workspace: Workspace, ref: str) -> None:
    """Remove a member together with their keys (which stop working at once)."""
    member = get_member(session, workspace, ref)
    for key in session.exec(select(ApiKey).where(col(ApiKey.member_id) == member.id)):
        session.delete(key)
    session.delete(member)
