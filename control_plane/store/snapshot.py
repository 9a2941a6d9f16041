"""A consistent, immutable view of the configuration, in the xDS contract's messages.

The xDS server serves exactly what `load_snapshot` returns, so everything the data
plane derives from a base URL (Envoy cluster name, Host header, path prefix) is
computed once here rather than in every ext_proc.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from infery_proto.v1 import config_pb2
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from control_plane.store import tables
from control_plane.store.changes import current_revision

_NOT_CLUSTER_CHARS = re.compile(r"[^a-z0-9_]")
_MAX_ATTEMPTS = 10
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


def load_snapshot(session: Session) -> Snapshot:
    """Read every configuration table as of one revision.

    Under READ COMMITTED (PostgreSQL's default) separate SELECTs may straddle a commit;
    since every configuration commit also bumps the revision, an unchanged revision
    before and after the reads proves they saw a single state. Retry otherwise.
    """
    for _ in range(_MAX_ATTEMPTS):
        before = current_revision(session)
        snapshot = _read(session, before)
        if current_revision(session) == before:
            return snapshot
    raise RuntimeError("configuration kept changing while loading the snapshot")


def _read(session: Session, revision: int) -> Snapshot:
    return Snapshot(
        revision=revision,
        providers=tuple(provider_message(p) for p in _all(session, tables.Provider, tables.Provider.name)),
        models=tuple(model_message(m) for m in _all(session, tables.Model, tables.Model.slug)),
        routes=tuple(route_message(r) for r in _all(session, tables.Route, tables.Route.slug)),
        workspaces=tuple(
            workspace_message(w) for w in _all(session, tables.Workspace, tables.Workspace.name)
        ),
        api_keys=tuple(
            api_key_message(k)
            for k in session.exec(
                _fresh(
                    select(tables.ApiKey)
                    .where(col(tables.ApiKey.revoked_at).is_(None))
                    .order_by(col(tables.ApiKey.id))
                )
            )
        ),
    )


def _all(session: Session, table: type[_T], order: Any) -> list[_T]:
    return list(session.exec(_fresh(select(table).order_by(col(order)))))


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
    )
    if row.rpm is not None:
        message.rpm = row.rpm
    if row.tpm is not None:
        message.tpm = row.tpm
    return message


def api_key_message(row: tables.ApiKey) -> config_pb2.ApiKey:
    return config_pb2.ApiKey(
        id=row.id,
        key_hash=row.key_hash,
        workspace_id=row.workspace_id,
        member_id=row.member_id,
        name=row.name,
        prefix=row.prefix,
    )
