"""Declarative configuration (gateway.yaml), applied idempotently at start.

The file declares the same resources as the admin API. Each is upserted by its natural
key (provider name, model slug, route slug, workspace name, member email, key secret or
name), nothing is deleted, and the whole file is one transaction: one revision bump when
something changed, none when it did not. `${VAR}` and `${VAR:-default}` in string values
keep secrets out of the file; `$${` writes a literal `${`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import Session, col, select

from control_plane.errors import ControlPlaneError
from control_plane.resources import keys, models, providers, routes, workspaces
from control_plane.schemas import (
    KeyIn,
    MemberIn,
    ModelIn,
    ModelUpdate,
    ProviderIn,
    ProviderUpdate,
    RouteIn,
    Slug,
    WorkspaceIn,
)
from control_plane.store.changes import is_changed, mutation
from control_plane.store.db import SessionFactory
from control_plane.store.tables import ApiKey, Model, Provider, Workspace

log = logging.getLogger(__name__)

_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """The file is invalid or contradicts the stored state; nothing was applied."""


# --- file shapes: the admin API's bodies, strict about unknown fields --------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderDecl(ProviderIn, _Strict):
    import_catalog: bool = Field(default=False, description="create every catalog model of this kind")


class ModelDecl(ModelIn, _Strict):
    pass


class RouteDecl(RouteIn, _Strict):
    slug: Slug


class MemberDecl(MemberIn, _Strict):
    pass


class KeyDecl(KeyIn, _Strict):
    secret: str | None = Field(default=None, description="a fixed inf_ secret, stored hashed")


class WorkspaceDecl(WorkspaceIn, _Strict):
    members: list[MemberDecl] = Field(default_factory=list)
    keys: list[KeyDecl] = Field(default_factory=list)


class GatewayFile(_Strict):
    providers: list[ProviderDecl] = Field(default_factory=list)
    models: list[ModelDecl] = Field(default_factory=list)
    routes: list[RouteDecl] = Field(default_factory=list)
    workspaces: list[WorkspaceDecl] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    workspace: str
    name: str
    secret: str


@dataclass(slots=True)
class ApplyResult:
    changed: bool = False
    # Keys declared without a secret and created by this run: their only chance to be shown.
    generated_keys: list[GeneratedKey] = field(default_factory=list)


# --- loading -----------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML floats stay text, so `price: 0.15` reaches the decimal parser exactly."""


_Loader.add_constructor(
    "tag:yaml.org,2002:float",
    lambda loader, node: loader.construct_scalar(node),  # type: ignore[arg-type]
)


def expand_env(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string inside `value`."""
    env = os.environ if env is None else env
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            found = env.get(name)
            if found:
                return found
            if default is not None:
                return default
            if found is not None:
                return found
            raise ConfigError(f"environment variable {name} is not set (use ${{{name}:-default}})")

        return _REFERENCE.sub(substitute, value)
    if isinstance(value, list):
        return [expand_env(item, env) for item in value]
    if isinstance(value, dict):
        return {key: expand_env(item, env) for key, item in value.items()}
    return value


def load(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayFile:
    try:
        raw = yaml.load(Path(path).read_text(), Loader=_Loader)  # a SafeLoader subclass
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        return GatewayFile.model_validate(expand_env(raw or {}, env))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None


# --- applying ----------------------------------------------------------------------------


def apply_config(
    path: str | Path, session_factory: SessionFactory, env: Mapping[str, str] | None = None
) -> ApplyResult:
    """Upsert everything the file declares, in one transaction."""
    config = load(path, env)
    result = ApplyResult()
    try:
        with mutation(session_factory) as session:
            _apply(session, config, result)
            session.flush()
            result.changed = is_changed(session)
    except ControlPlaneError as exc:
        raise ConfigError(f"{path}: {exc.message}" + (f" ({exc.param})" if exc.param else "")) from None
    return result


def _apply(session: Session, config: GatewayFile, result: ApplyResult) -> None:
    for provider in config.providers:
        _upsert_provider(session, provider)
    for model in config.models:
        _upsert_model(session, model)
    for route in config.routes:
        routes.put(
            session, route.slug, RouteIn(**route.model_dump(include=route.model_fields_set - {"slug"}))
        )
    for workspace in config.workspaces:
        _upsert_workspace(session, workspace, result)


def _upsert_provider(session: Session, decl: ProviderDecl) -> None:
    given = decl.model_fields_set - {"import_catalog"}
    if session.get(Provider, decl.name) is None:
        providers.create(session, ProviderIn(**decl.model_dump(include=given)))
    else:
        providers.update(session, decl.name, ProviderUpdate(**decl.model_dump(include=given)))
    if decl.import_catalog:
        models.import_catalog(session, decl.name)


def _upsert_model(session: Session, decl: ModelDecl) -> None:
    given = decl.model_fields_set
    if session.get(Model, decl.slug) is None:
        models.create(session, ModelIn(**decl.model_dump(include=given)))
    else:
        models.update(session, decl.slug, ModelUpdate(**decl.model_dump(include=given)))


def _upsert_workspace(session: Session, decl: WorkspaceDecl, result: ApplyResult) -> None:
    body = WorkspaceIn(**decl.model_dump(include=decl.model_fields_set - {"members", "keys"}))
    workspace = workspaces.find(session, decl.name)
    if workspace is None:
        workspace = workspaces.create(session, body)
        session.flush()
    else:
        workspaces.update(session, decl.name, body)
    for member_decl in decl.members:
        member = workspaces.find_member(session, workspace, member_decl.email)
        if member is None:
            workspaces.add_member(
                session, workspace, MemberIn(email=member_decl.email, role=member_decl.role)
            )
        elif "role" in member_decl.model_fields_set:
            member.role = member_decl.role
    session.flush()
    for key_decl in decl.keys:
        _upsert_key(session, workspace, key_decl, result)


def _upsert_key(session: Session, workspace: Workspace, decl: KeyDecl, result: ApplyResult) -> None:
    body = KeyIn(name=decl.name, member=decl.member)
    member = workspaces.get_member(session, workspace, decl.member)
    if decl.secret is None:
        active = session.exec(
            select(ApiKey).where(
                col(ApiKey.workspace_id) == workspace.id,
                col(ApiKey.member_id) == member.id,
                col(ApiKey.name) == decl.name,
                col(ApiKey.revoked_at).is_(None),
            )
        ).first()
        if active is None:
            _, _, secret = keys.create(session, workspace, body)
            result.generated_keys.append(GeneratedKey(workspace.name, decl.name, secret))
        return
    existing = keys.find_by_hash(session, keys.hash_secret(decl.secret))
    if existing is None:
        keys.create(session, workspace, body, secret=decl.secret)
        return
    if existing.workspace_id != workspace.id:
        raise ConfigError(f"key {decl.name!r} of workspace {workspace.name!r} is used by another workspace")
    existing.name = decl.name
    existing.member_id = member.id
    if existing.revoked_at is not None:
        # Revocation through the API wins over the file: restarting must not resurrect a leaked key.
        log.warning(
            "key %r of workspace %r is declared in the config but revoked; it stays revoked",
            decl.name,
            workspace.name,
        )
