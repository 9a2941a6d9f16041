"""A consistent, immutable view of the configuration, in the xDS contract's messages.

The xDS server serves exactly what `load_snapshot` returns, so everything the data
plane derives from a base URL (Envoy cluster name, Host header, path prefix) is
computed once here rather than in every ext_proc.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import sqlalchemy as sa
from infery_proto.v1 import config_pb2
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from control_plane.store import tables
from control_plane.store.chain_variants import add_variants
from control_plane.store.changes import current_revision

_NOT_CLUSTER_CHARS = re.compile(r"[^a-z0-9_]")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Snapshot:
    revision: int
    providers: tuple[config_pb2.Provider, ...]
    models: tuple[config_pb2.Model, ...]
    routes: tuple[config_pb2.Route, ...]
    workspaces: tuple[config_pb2.Workspace, ...]
    api_keys: tuple[config_pb2.ApiKey, ...]  # non-revoked keys only


def cluster_name(provider_name: str) -> str:
    """`provider_<name>` reduced to [a-z0-9_]; a short hash keeps "a-b" and "a_b" apart."""
    return _safe_name("provider", provider_name)


def _safe_name(kind: str, name: str) -> str:
    sanitized = _NOT_CLUSTER_CHARS.sub("_", name.lower())
    if sanitized != name:
        sanitized += "_" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{kind}_{sanitized}"


def split_base_url(base_url: str) -> tuple[str, str]:
    """(host[:port], path without trailing slash) of a provider's base URL."""
    parts = urlsplit(base_url)
    host = parts.netloc.rpartition("@")[2]
    return host, parts.path.rstrip("/")


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed between revision `since` (exclusive) and `revision` (inclusive).

    Rows written since `since`, as xDS messages, and the names of the resources to drop
    (deleted rows and revoked keys). With `since == 0` it is the whole configuration.
    """

    since: int
    revision: int
    providers: tuple[config_pb2.Provider, ...] = ()
    models: tuple[config_pb2.Model, ...] = ()
    routes: tuple[config_pb2.Route, ...] = ()
    workspaces: tuple[config_pb2.Workspace, ...] = ()
    api_keys: tuple[config_pb2.ApiKey, ...] = ()  # non-revoked keys only
    removed: dict[str, tuple[str, ...]] = field(default_factory=dict)  # kind (table name) -> names

    def is_empty(self) -> bool:
        return not (
            self.providers
            or self.models
            or self.routes
            or self.workspaces
            or self.api_keys
            or any(self.removed.values())
        )


def load_snapshot(session: Session) -> Snapshot:
    """The whole configuration as of one revision, each chain with its workspaces' variants."""
    full = load_changes(session, 0)
    add_variants(full.routes, full.workspaces)
    return Snapshot(full.revision, full.providers, full.models, full.routes, full.workspaces, full.api_keys)


def load_changes(session: Session, since: int) -> Changes:
    """Rows changed after revision `since`, through the `updated_revision` indexes: one read, no retries.

    The revision is read first. Revisions commit in order (see `changes`), so every row
    stamped up to it is visible to the reads that follow; a row of a later revision that
    slips in is read again next time, which is harmless. On PostgreSQL the reads share one
    REPEATABLE READ snapshot, so a publish never sees half of a commit.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    revision = current_revision(session)
    if revision == since:
        return Changes(since, revision)
    keys, revoked = _changed_keys(session, since)
    removed: dict[str, list[str]] = {"api_keys": revoked} if revoked else {}
    providers = _changed(session, tables.Provider, tables.Provider.name, since)
    models = _changed(session, tables.Model, tables.Model.slug, since)
    routes = _changed(session, tables.Route, tables.Route.slug, since)
    workspaces = _changed(session, tables.Workspace, tables.Workspace.name, since)
    if since:
        written = {
            "providers": {p.name for p in providers},
            "models": {m.slug for m in models},
            "routes": {r.slug for r in routes},
            "workspaces": {w.id for w in workspaces},
            "api_keys": {k.id for k in keys},
        }
        tombstones = session.exec(
            select(tables.ConfigTombstone.kind, tables.ConfigTombstone.key).where(
                col(tables.ConfigTombstone.revision) > since
            )
        )
        for kind, name in tombstones:
            if name not in written.get(kind, ()):  # deleted, then created again: the row wins
                removed.setdefault(kind, []).append(name)
    return Changes(
        since=since,
        revision=revision,
        providers=tuple(provider_message(p) for p in providers),
        models=tuple(model_message(m) for m in models),
        routes=tuple(route_message(r) for r in routes),
        workspaces=tuple(workspace_message(w) for w in workspaces),
        api_keys=tuple(keys),
        removed={kind: tuple(names) for kind, names in removed.items()},
    )


def _changed(session: Session, table: type[_T], order: Any, since: int) -> list[_T]:
    statement = select(table).where(col(table.updated_revision) > since).order_by(col(order))  # type: ignore[attr-defined]
    return list(session.exec(_fresh(statement)))


_KEY_COLUMNS = tuple(
    col(c)
    for c in (
        tables.ApiKey.id,
        tables.ApiKey.key_hash,
        tables.ApiKey.workspace_id,
        tables.ApiKey.member_id,
        tables.ApiKey.name,
        tables.ApiKey.prefix,
        tables.ApiKey.revoked_at,
    )
)


def _changed_keys(session: Session, since: int) -> tuple[list[config_pb2.ApiKey], list[str]]:
    """Live keys written after `since`, and the ids of keys revoked after it.

    Plain column reads, no ORM objects: at startup this reads every key (10^5 and more).
    """
    statement = sa.select(*_KEY_COLUMNS).order_by(col(tables.ApiKey.id))
    if since:
        statement = statement.where(col(tables.ApiKey.updated_revision) > since)
    else:
        statement = statement.where(col(tables.ApiKey.revoked_at).is_(None))
    live: list[config_pb2.ApiKey] = []
    revoked: list[str] = []
    row: Any
    for row in session.connection().execute(statement):
        if row.revoked_at is not None:
            revoked.append(row.id)
        else:
            live.append(
                config_pb2.ApiKey(
                    id=row.id,
                    key_hash=row.key_hash,
                    workspace_id=row.workspace_id,
                    member_id=row.member_id,
                    name=row.name,
                    prefix=row.prefix,
                )
            )
    return live, revoked


def _fresh(statement: SelectOfScalar[_T]) -> SelectOfScalar[_T]:
    # A long-lived session would otherwise hand back rows cached in its identity map.
    return statement.execution_options(populate_existing=True)


def provider_message(row: tables.Provider) -> config_pb2.Provider:
    host, base_path = split_base_url(row.base_url)
    return config_pb2.Provider(
        name=row.name,
        kind=row.kind,
        base_url=row.base_url,
        api_key=row.api_key or "",
        cluster=cluster_name(row.name),
        base_path=base_path,
        host=host,
    )


def model_message(row: tables.Model) -> config_pb2.Model:
    prices = config_pb2.Prices(**{name: getattr(row, name) or "" for name in tables.PRICE_FIELDS})
    return config_pb2.Model(
        slug=row.slug,
        provider=row.provider,
        upstream_model=row.upstream_model,
        prices=prices,
        capabilities=list(row.capabilities),
        created=int(row.created_at.timestamp()),
    )


def route_message(row: tables.Route) -> config_pb2.Route:
    return config_pb2.Route(
        slug=row.slug,
        cluster=_safe_name("route", row.slug) if row.fallbacks else "",
        fallbacks=list(row.fallbacks),
        retry_on=list(row.retry_on),
        attempt_timeout_s=row.attempt_timeout_s,
        total_timeout_s=row.total_timeout_s,
    )


def workspace_message(row: tables.Workspace) -> config_pb2.Workspace:
    message = config_pb2.Workspace(
        id=row.id,
        name=row.name,
        budget_credits=row.budget_credits or "",
        budget_period=row.budget_period,
        price_multiplier=row.price_multiplier,
        allowed_models=list(row.allowed_models),
        share_idempotent_replays=row.share_idempotent_replays,
    )
    if row.rpm is not None:
        message.rpm = row.rpm
    if row.tpm is not None:
        message.tpm = row.tpm
    if row.batch_rpm is not None:
        message.batch_rpm = row.batch_rpm
    if row.batch_tpm is not None:
        message.batch_tpm = row.batch_tpm
    return message
