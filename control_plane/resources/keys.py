"""inf_ API keys. Only the SHA-256 of a secret is stored; the secret is shown once."""

from __future__ import annotations

import hashlib
import secrets

from sqlmodel import Session, col, select

from control_plane.errors import AlreadyExists, InvalidRequest, NotFound
from control_plane.resources import workspaces
from control_plane.schemas import KeyCreated, KeyIn, KeyOut
from control_plane.store.tables import ApiKey, Member, Workspace, utcnow

KEY_PREFIX = "inf_"
DISPLAY_PREFIX_CHARS = 12
MIN_SECRET_CHARS = 20


def new_secret() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def to_out(row: ApiKey, member: Member) -> KeyOut:
    return KeyOut(
        id=row.id,
        name=row.name,
        member=member.id,
        member_email=member.email,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def to_created(row: ApiKey, member: Member, secret: str) -> KeyCreated:
    return KeyCreated(**to_out(row, member).model_dump(), key=secret)


def list_for(session: Session, workspace: Workspace) -> list[tuple[ApiKey, Member]]:
    statement = (
        select(ApiKey, Member)
        .join(Member, col(Member.id) == col(ApiKey.member_id))
        .where(col(ApiKey.workspace_id) == workspace.id)
        .order_by(col(ApiKey.created_at), col(ApiKey.id))
    )
    return [(key, member) for key, member in session.exec(statement)]


def get(session: Session, workspace: Workspace, key_id: str) -> tuple[ApiKey, Member]:
    row = session.get(ApiKey, key_id)
    if row is None or row.workspace_id != workspace.id:
        raise NotFound(f"workspace {workspace.name!r} has no key {key_id!r}", param="id")
    member = session.get(Member, row.member_id)
    assert member is not None  # enforced by the foreign key
    return row, member


def create(
    session: Session, workspace: Workspace, body: KeyIn, secret: str | None = None
) -> tuple[ApiKey, Member, str]:
    """Create a key for a member; `secret` lets a config file pin a known key (stored hashed)."""
    member = workspaces.find_member(session, workspace, body.member)
    if member is None:
        raise InvalidRequest(f"workspace {workspace.name!r} has no member {body.member!r}", param="member")
    if secret is None:
        secret = new_secret()
    elif not secret.startswith(KEY_PREFIX) or len(secret) < MIN_SECRET_CHARS:
        raise InvalidRequest(
            f"a key secret must start with {KEY_PREFIX!r} and be at least {MIN_SECRET_CHARS} characters",
            param="secret",
        )
    key_hash = hash_secret(secret)
    if find_by_hash(session, key_hash) is not None:
        raise AlreadyExists("a key with this secret already exists", param="secret")
    row = ApiKey(
        workspace_id=workspace.id,
        member_id=member.id,
        name=body.name,
        prefix=secret[:DISPLAY_PREFIX_CHARS],
        key_hash=key_hash,
    )
    session.add(row)
    return row, member, secret


def find_by_hash(session: Session, key_hash: str) -> ApiKey | None:
    return session.exec(select(ApiKey).where(col(ApiKey.key_hash) == key_hash)).first()


def revoke(session: Session, workspace: Workspace, key_id: str) -> tuple[ApiKey, Member]:
    """Idempotent: revoking a revoked key keeps its first revocation time."""
    row, member = get(session, workspace, key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row, member
