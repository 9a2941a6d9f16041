"""ext_proc's in-memory view of the gateway configuration.

Built from the xDS resources of the control plane (see proto/infery_proto)
and swapped atomically: a request reads one consistent :class:`GatewayConfig`
from start to end.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from infery_proto.v1 import config_pb2

from ext_proc import translators
from ext_proc.metering import Prices
from ext_proc.translators.base import Translator


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    kind: str
    cluster: str
    base_path: str
    host: str
    api_key: str
    translator: Translator


@dataclass(frozen=True, slots=True)
class Model:
    slug: str
    provider: Provider
    upstream_model: str
    prices: Prices
    capabilities: frozenset[str]
    created: int


@dataclass(frozen=True, slots=True)
class Workspace:
    id: str
    name: str
    rpm: int | None
    tpm: int | None
    budget_credits: Decimal | None
    budget_period: str
    price_multiplier: Decimal
    allowed_models: frozenset[str] | None  # None = every model

    def allows(self, slug: str) -> bool:
        return self.allowed_models is None or slug in self.allowed_models


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    key_hash: str
    workspace: Workspace
    member_id: str
    name: str


@dataclass(frozen=True, slots=True)
class Route:
    slug: str
    fallbacks: tuple[str, ...]
    retry_on: tuple[str, ...]
    attempt_timeout_s: float
    total_timeout_s: float
    cluster: str  # the chain's Envoy cluster; empty without fallbacks


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    keys_by_hash: dict[str, ApiKey] = field(default_factory=dict)
    models: dict[str, Model] = field(default_factory=dict)
    workspaces: dict[str, Workspace] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)


def build(
    providers: Iterable[config_pb2.Provider],
    models: Iterable[config_pb2.Model],
    workspaces: Iterable[config_pb2.Workspace],
    keys: Iterable[config_pb2.ApiKey],
    routes: Iterable[config_pb2.Route],
) -> GatewayConfig:
    """Resolve references between resources; entries whose references dangle are left out."""
    provider_by_name: dict[str, Provider] = {}
    for p in providers:
        try:
            translator = translators.for_kind(p.kind)
        except KeyError:
            continue
        provider_by_name[p.name] = Provider(
            p.name, p.kind, p.cluster, p.base_path, p.host, p.api_key, translator
        )
    model_by_slug: dict[str, Model] = {}
    for m in models:
        provider = provider_by_name.get(m.provider)
        if provider is None:
            continue
        pr = m.prices
        model_by_slug[m.slug] = Model(
            m.slug,
            provider,
            m.upstream_model,
            Prices.parse(pr.input_per_mtok, pr.cached_input_per_mtok, pr.output_per_mtok, pr.per_image),
            frozenset(m.capabilities),
            m.created,
        )
    workspace_by_id = {
        w.id: Workspace(
            w.id,
            w.name,
            w.rpm if w.HasField("rpm") else None,
            w.tpm if w.HasField("tpm") else None,
            Decimal(w.budget_credits) if w.budget_credits else None,
            w.budget_period or "month",
            Decimal(w.price_multiplier or "1"),
            frozenset(w.allowed_models) if w.allowed_models else None,
        )
        for w in workspaces
    }
    key_by_hash = {
        k.key_hash: ApiKey(k.id, k.key_hash, workspace_by_id[k.workspace_id], k.member_id, k.name)
        for k in keys
        if k.workspace_id in workspace_by_id
    }
    route_by_slug = {
        r.slug: Route(
            r.slug, tuple(r.fallbacks), tuple(r.retry_on), r.attempt_timeout_s, r.total_timeout_s, r.cluster
        )
        for r in routes
    }
    return GatewayConfig(key_by_hash, model_by_slug, workspace_by_id, route_by_slug)
