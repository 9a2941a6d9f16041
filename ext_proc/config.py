"""ext_proc's in-memory view of the gateway configuration.

Built from the xDS resources of the control plane (see proto/infery_proto)
and swapped atomically: a request reads one consistent :class:`GatewayConfig`
from start to end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import partial
from sys import intern
from typing import Any

from infery_proto.v1 import config_pb2

from ext_proc.envoy_messages import preset
from ext_proc.header_policy import router_headers
from ext_proc.metering import Prices
from ext_proc.translators import WIRE_FORMATS


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    kind: str
    cluster: str
    base_path: str
    host: str
    api_key: str
    # The API its kind speaks (translators.WIRE_FORMATS). Its kind, with the endpoint, picks
    # the translator of each request (translators.translator_for).
    wire_format: str


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
    share_idempotent_replays: bool = False  # replays go to any key of the workspace, not only the member's
    # The batch lane's limits (ext_proc/limits.py): None = the same figure as rpm/tpm, in a bucket
    # of its own, so batch lines never take what live requests would be admitted on.
    batch_rpm: int | None = None
    batch_tpm: int | None = None

    def batch_lane(self) -> Workspace:
        """This workspace as its batch lines are admitted: the batch lane's rpm and tpm, the
        same budget (a batch spends the workspace's credits like any request)."""
        rpm = self.rpm if self.batch_rpm is None else self.batch_rpm
        tpm = self.tpm if self.batch_tpm is None else self.batch_tpm
        return replace(self, rpm=rpm, tpm=tpm)

    def allows(self, slug: str) -> bool:
        return self.allowed_models is None or slug in self.allowed_models


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An authenticated key with its workspace as of this request (see ``auth.authenticate``)."""

    id: str
    key_hash: str
    workspace: Workspace
    member_id: str
    name: str


# A key as authentication reads it: (id, key_hash, workspace_id, member_id, name). The
# workspace is by id, resolved at authentication, so a workspace change touches no key.
KeyRecord = tuple[str, str, str, str, str]

_SHARDS = 256
_SEP = "\x1f"  # between the fields of a key's owner (ids never contain it; the name comes last)


class KeyTable:
    """Every key, by the SHA-256 of its secret and by its id, in 256 small dicts each.

    Only strings are stored, in three dicts per shard: ``key_hash -> key_id``,
    ``key_id -> key_hash`` and ``key_id -> "workspace_id␟member_id␟name"`` (that last string
    interned: keys of one member share it). The garbage collector never tracks a dict that
    holds only strings, so at any number of keys a collection walks none of them. A tuple
    per key made the dict it went into tracked again (until the next full collection), and
    every collection then walked all of that dict's entries: with 10^5 keys arriving,
    collections of 4-10 ms in the middle of the load, ten times that at 10^6.

    A dict that grows copies all of its entries at once, on the event loop: at 10^6 keys one
    resize would copy ~1.4 million entries. Shards chosen by the string's hash (computed once
    per string, and reused by the dict lookup) resize 1/256 of the keys at a time. For the
    same reason a table is never dropped whole while it holds keys (:meth:`forward_to`).
    """

    __slots__ = ("_hash_by_id", "_id_by_hash", "_owner_by_id")

    def __init__(self) -> None:
        self._id_by_hash: list[dict[str, str]] = [{} for _ in range(_SHARDS)]
        self._hash_by_id: list[dict[str, str]] = [{} for _ in range(_SHARDS)]
        self._owner_by_id: list[dict[str, str]] = [{} for _ in range(_SHARDS)]

    def get(self, key_hash: str) -> KeyRecord | None:
        key_id = self._id_by_hash[hash(key_hash) % _SHARDS].get(key_hash)
        if key_id is None:
            return None
        owner = self._owner_by_id[hash(key_id) % _SHARDS][key_id].split(_SEP, 2)
        workspace_id, member_id, name = map(intern, owner)  # one string each, whoever asks
        return key_id, key_hash, workspace_id, member_id, name

    def by_id(self, key_id: str) -> KeyRecord | None:
        """The key ``key_id`` (a batch line names its key by id: ext_proc/batch_gate.py)."""
        key_hash = self._hash_by_id[hash(key_id) % _SHARDS].get(key_id)
        return None if key_hash is None else self.get(key_hash)

    def __contains__(self, key_hash: str) -> bool:
        return key_hash in self._id_by_hash[hash(key_hash) % _SHARDS]

    def __len__(self) -> int:
        return sum(map(len, self._hash_by_id))

    def put(self, record: KeyRecord) -> None:
        key_id, key_hash, workspace_id, member_id, name = record  # kept as strings only, not as given
        self.remove(key_id)
        shard = hash(key_id) % _SHARDS
        self._hash_by_id[shard][key_id] = key_hash
        self._owner_by_id[shard][key_id] = intern(_SEP.join((workspace_id, member_id, name)))
        self._id_by_hash[hash(key_hash) % _SHARDS][key_hash] = key_id

    def remove(self, key_id: str) -> None:
        shard = hash(key_id) % _SHARDS
        key_hash = self._hash_by_id[shard].pop(key_id, None)
        if key_hash is not None:
            del self._owner_by_id[shard][key_id]
            self._id_by_hash[hash(key_hash) % _SHARDS].pop(key_hash, None)

    def forward_to(self, newer: KeyTable) -> list[dict[str, str]]:
        """Serve ``newer``'s keys from now on (a view still holding this table sees them, and
        their updates); returns this table's own dicts, for the caller to drop a few at a time.

        Dropping 10^5 keys at once frees ~3 x 10^5 objects in one go: ~23 ms on the event
        loop (0.2 s at 10^6). One dict is ~1/768 of that.
        """
        own = [*self._id_by_hash, *self._hash_by_id, *self._owner_by_id]
        self._id_by_hash, self._hash_by_id = newer._id_by_hash, newer._hash_by_id
        self._owner_by_id = newer._owner_by_id
        return own


@dataclass(frozen=True, slots=True)
class Route:
    slug: str
    fallbacks: tuple[str, ...]
    retry_on: tuple[str, ...]
    attempt_timeout_s: float
    total_timeout_s: float
    cluster: str  # the chain's Envoy cluster; empty without fallbacks
    # The chain cut to a workspace's allowed targets (primary first) → its Envoy cluster.
    variants: dict[tuple[str, ...], str] = field(default_factory=dict)
    # What Envoy's router is told with this route's requests (header_policy.router_headers),
    # made once here, not per request (envoy_messages.preset): by the cluster a chain's request
    # goes to (its own, or a variant's: as many retries as that cluster has fallbacks), and for a
    # request to its model's provider alone (an endpoint a chain does not serve; no chain).
    router: dict[str, bytes] = field(init=False, repr=False, compare=False)
    direct: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        chain = bool(self.cluster)

        def headers(retries: int) -> bytes:
            return preset(
                router_headers(self.retry_on, retries, self.attempt_timeout_s, self.total_timeout_s, chain)
            )

        own = headers(len(self.fallbacks))
        router = {cluster: headers(len(targets) - 1) for targets, cluster in self.variants.items()}
        if chain:
            router[self.cluster] = own
        object.__setattr__(self, "router", router)
        object.__setattr__(self, "direct", own)

    def allowed_chain(self, workspace: Workspace) -> tuple[tuple[str, ...], str]:
        """(targets, cluster) of this chain for ``workspace``: the targets it may use, in order.

        The cluster is the chain's own when nothing is excluded, else the variant the control
        plane built for these targets; if that is not published yet, the chain's own (its
        attempts then refuse the excluded targets: they are never served).
        """
        targets = tuple(t for t in (self.slug, *self.fallbacks) if workspace.allows(t))
        if len(targets) == len(self.fallbacks) + 1:
            return targets, self.cluster
        return targets, self.variants.get(targets, self.cluster)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """One consistent view for a request. `keys_by_hash` is shared between views and updated in
    place, one key at a time: at 10^5 keys, copying it for every change would stall requests."""

    keys_by_hash: KeyTable = field(default_factory=KeyTable)
    models: dict[str, Model] = field(default_factory=dict)
    workspaces: dict[str, Workspace] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)
    attempt_grant_key: bytes = b""  # signs chain requests' attempt grants (ext_proc/attempt_grant.py)
    files_identity_key: bytes = b""  # signs what ext_proc asserts to the files service (endpoints/files.py)
    batch_line_key: bytes = b""  # verifies a batch worker's lines (infery_proto/batch_assertion.py)


PROVIDER = "Provider"
MODEL = "Model"
WORKSPACE = "Workspace"
ROUTE = "Route"
API_KEY = "ApiKey"
DATA_PLANE_SECRET = "DataPlaneSecret"


class ConfigState:
    """The resources received over delta xDS, and the :class:`GatewayConfig` they make.

    Each change costs work proportional to itself: a key is one table entry; a model,
    workspace or route rebuilds only its own entry, in a copy of its (small) map that
    replaces the old one at once; a provider rebuilds the models it serves. An entry that
    cannot be built is refused on its own (its previous version stays) and reported, so a
    bad resource never blocks the others.
    """

    def __init__(self) -> None:
        self._providers: dict[str, Provider] = {}
        self._model_messages: dict[str, config_pb2.Model] = {}
        self.keys_by_hash = KeyTable()
        self.current = GatewayConfig(self.keys_by_hash)

    def apply(self, kind: str, items: Iterable[Any], removed: Iterable[str]) -> dict[str, str]:
        """Apply one response's resources of `kind`; the entries refused, by name, and why."""
        errors: dict[str, str] = {}
        current = self.current
        if kind == API_KEY:
            self._apply_keys(items, removed)
            return errors
        if kind == PROVIDER:
            self._apply_providers(items, removed, errors)
            return errors
        if kind == MODEL:
            models = dict(current.models)
            for name in removed:
                self._model_messages.pop(name, None)
                models.pop(name, None)
            for m in items:
                self._model_messages[m.slug] = m
                _put(models, m.slug, partial(_model, m, self._providers), errors)
            self.current = replace(current, models=models)
        elif kind == WORKSPACE:
            workspaces = dict(current.workspaces)
            for name in removed:
                workspaces.pop(name, None)
            for w in items:
                _put(workspaces, w.id, partial(_workspace, w), errors)
            self.current = replace(current, workspaces=workspaces)
        elif kind == DATA_PLANE_SECRET:
            # One secret resource; removing it leaves no keys (chain attempts and files
            # requests are then refused).
            gone = bool(list(removed))
            key = b"" if gone else current.attempt_grant_key
            files_key = b"" if gone else current.files_identity_key
            batch_key = b"" if gone else current.batch_line_key
            for s in items:
                key, files_key, batch_key = s.attempt_grant_key, s.files_identity_key, s.batch_line_key
            self.current = replace(
                current, attempt_grant_key=key, files_identity_key=files_key, batch_line_key=batch_key
            )
        elif kind == ROUTE:
            routes = dict(current.routes)
            for name in removed:
                routes.pop(name, None)
            for r in items:
                _put(routes, r.slug, partial(_route, r), errors)
            self.current = replace(current, routes=routes)
        else:
            errors[kind] = "unknown resource kind"
        return errors

    def _apply_keys(self, items: Iterable[config_pb2.ApiKey], removed: Iterable[str]) -> None:
        keys = self.keys_by_hash
        for key_id in removed:
            keys.remove(key_id)
        for k in items:
            keys.put((k.id, k.key_hash, k.workspace_id, k.member_id, k.name))

    def _apply_providers(
        self, items: Iterable[config_pb2.Provider], removed: Iterable[str], errors: dict[str, str]
    ) -> None:
        providers = dict(self._providers)
        touched = set(removed)
        for name in touched:
            providers.pop(name, None)
        for p in items:
            touched.add(p.name)
            _put(providers, p.name, partial(_provider, p), errors)
        self._providers = providers
        models = dict(self.current.models)
        for slug, m in self._model_messages.items():
            if m.provider in touched:
                models.pop(slug, None)
                _put(models, slug, partial(_model, m, providers), errors)
        self.current = replace(self.current, models=models)


class Dangling(Exception):
    """A resource that references one this configuration does not have (yet): left out, not an error."""


def _put(target: dict[str, Any], name: str, make: Callable[[], Any], errors: dict[str, str]) -> None:
    try:
        target[name] = make()
    except Dangling:
        target.pop(name, None)
    except Exception as exc:
        errors[name] = str(exc) or type(exc).__name__


def _provider(p: config_pb2.Provider) -> Provider:
    wire_format = WIRE_FORMATS.get(p.kind)
    if wire_format is None:
        raise Dangling(p.kind)
    return Provider(p.name, p.kind, p.cluster, p.base_path, p.host, p.api_key, wire_format)


def _model(m: config_pb2.Model, providers: dict[str, Provider]) -> Model:
    provider = providers.get(m.provider)
    if provider is None:
        raise Dangling(m.provider)
    pr = m.prices
    return Model(
        m.slug,
        provider,
        m.upstream_model,
        Prices.parse(
            pr.input_per_mtok,
            pr.cached_input_per_mtok,
            pr.output_per_mtok,
            pr.per_image,
            pr.per_audio_second,
            pr.per_mchar,
        ),
        frozenset(m.capabilities),
        m.created,
    )


def _workspace(w: config_pb2.Workspace) -> Workspace:
    return Workspace(
        w.id,
        w.name,
        w.rpm if w.HasField("rpm") else None,
        w.tpm if w.HasField("tpm") else None,
        Decimal(w.budget_credits) if w.budget_credits else None,
        w.budget_period or "month",
        Decimal(w.price_multiplier or "1"),
        frozenset(w.allowed_models) if w.allowed_models else None,
        w.share_idempotent_replays,
        w.batch_rpm if w.HasField("batch_rpm") else None,
        w.batch_tpm if w.HasField("batch_tpm") else None,
    )


def _route(r: config_pb2.Route) -> Route:
    return Route(
        r.slug,
        tuple(r.fallbacks),
        tuple(r.retry_on),
        r.attempt_timeout_s,
        r.total_timeout_s,
        r.cluster,
        {tuple(v.targets): v.cluster for v in r.variants},
    )


def build(
    providers: Iterable[config_pb2.Provider],
    models: Iterable[config_pb2.Model],
    workspaces: Iterable[config_pb2.Workspace],
    keys: Iterable[config_pb2.ApiKey],
    routes: Iterable[config_pb2.Route],
    secrets: Iterable[config_pb2.DataPlaneSecret] = (),
) -> GatewayConfig:
    """A whole configuration at once; entries whose references dangle are left out, invalid ones raise."""
    state = ConfigState()
    for kind, items in (
        (PROVIDER, providers),
        (MODEL, models),
        (WORKSPACE, workspaces),
        (ROUTE, routes),
        (DATA_PLANE_SECRET, secrets),
    ):
        errors = state.apply(kind, items, ())
        if errors:
            raise ValueError("; ".join(f"{name}: {why}" for name, why in errors.items()))
    state.apply(API_KEY, keys, ())
    return state.current
