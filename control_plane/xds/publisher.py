"""Keeps the xDS caches equal to the store, publishing only what changed.

One publish at a time, in one task: a configuration commit in this process wakes
it at once, and a poll of the store's revision catches commits made by other
control-plane replicas sharing the database. Whatever was committed while a
publish ran is coalesced into the next one, which reads every change since the
revision last published in a single read (`load_changes`), so steady writes
never starve it. Database reads and protobuf building run in a worker thread;
the event loop only swaps the results in.

ext_proc's resources (keys, models, workspaces...) go to the `DeltaCache`, one
resource each; so does the `DataPlaneSecret` (the attempt-grant key), sent when it
is first published and again only if the stored key differs. Envoy's streams serve
only Envoy's types (`envoy_cache`), so the secret is never in its configuration.

Envoy's resources (delta xDS too: each cluster, the listener and the route configuration
a resource of its own, versioned by its content) are rebuilt only when a provider, model
or route changed, each cluster built once per input (`EnvoyResources`), and only those
whose content changed are sent: a key change never touches them, a chain change sends
Envoy its cluster alone. The route configuration does not depend on the chains at all
(one chain route for every chain: envoy_config.chain_route); a chain's retries and
timeouts reach Envoy with each of its requests, from ext_proc.

Order across the two protocols. ext_proc picks the cluster of each request (a chain,
a chain's variant, a provider) and Envoy routes to it by name, so every cluster ext_proc
may name must be in every Envoy:

- Adding: a publish that changes Envoy's resources installs them, waits until every
  connected Envoy has answered each changed cluster (and the route configuration, when it
  changed: at start) (`EnvoyCache.answered`), and only then publishes ext_proc's changes
  of that revision. A model whose chain is created keeps going to its provider until
  ext_proc has the chain, whose cluster Envoy has.
- Removing: a cluster a build no longer has *retires*: it stays in Envoy's resources
  until every connected ext_proc has applied the revision that dropped it
  (`DeltaCache.applied_everywhere`) and `RETIRE_AFTER_S` has passed, for the requests
  ext_proc routed just before, which reach Envoy's router only once their body has been
  through ext_proc. The revision poll rebuilds Envoy's resources then.

Each wait has a bound (`ACK_TIMEOUT_S`): an Envoy that does not answer delays publishing
by that much, logged, and no more. An Envoy that rejects (NACK) counts as having
answered: the rejection is logged as an error and it keeps its previous clusters, so
requests ext_proc sends to the rejected ones fail; holding every later change (key
revocations) back for it would be worse. The order holds between the Envoys and
ext_procs connected to this control-plane process; with several control-plane replicas
each orders its own subscribers only. Envoy answers a CDS update once it has taken the
clusters in, which for a provider named by DNS (STRICT_DNS) may be before their first
resolution ends ("warming"; Envoy gives no signal for it), so nothing covers that. A publish
that changes Envoy's resources costs one Envoy round trip before ext_proc gets it (tens
of milliseconds at 1,000 chains, and a key change published with it waits as long); a
key change alone costs none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message
from infery_proto.v1 import config_pb2
from sqlmodel import Session

from control_plane.store import changes
from control_plane.store.chain_variants import (
    Restriction,
    affected_routes,
    restriction,
    set_variants,
    variant_clusters,
)
from control_plane.store.snapshot import Changes, Snapshot, load_changes
from control_plane.xds import envoy_config
from control_plane.xds.data_plane_secret import data_plane_secret
from control_plane.xds.envoy_cache import CLUSTER, LISTENER, ROUTE, EnvoyCache, EnvoyResource, envoy_resource
from control_plane.xds.server import DeltaCache, TypeChanges, resource

log = logging.getLogger("infery.control_plane.xds")
SLOW_PUBLISH_MS = 100.0  # a publish slower than this is logged (wall and the worker's CPU)
# The longest a publish waits for Envoys' answers (see above).
ACK_TIMEOUT_S = 5.0
# How long a dropped cluster stays in Envoy after every ext_proc stopped naming it.
RETIRE_AFTER_S = 10.0
# What ext_proc names: the clusters, and the chain route (in the route configuration).
REFERENCED_BY_EXT_PROC = (CLUSTER, ROUTE)

_T = "type.googleapis.com/infery.v1."
# ext_proc's types, in the order a push sends them: referenced resources first.
DATA_PLANE_SECRET = _T + "DataPlaneSecret"
DELTA_TYPES = (
    _T + "Provider",
    _T + "Model",
    _T + "Workspace",
    _T + "Route",
    _T + "ApiKey",
    DATA_PLANE_SECRET,
)
_KINDS = {  # type URL -> the store's kind (table name)
    _T + "Provider": "providers",
    _T + "Model": "models",
    _T + "Workspace": "workspaces",
    _T + "Route": "routes",
    _T + "ApiKey": "api_keys",
}


def build_resources(snapshot: Snapshot, listener: envoy_config.ListenerSettings) -> dict[str, list[Any]]:
    """Every Envoy resource of a snapshot, by type URL (uncached: for tests and tools)."""
    return EnvoyResources(listener).build(snapshot.providers, snapshot.models, snapshot.routes)


class _PerMessage:
    """Something computed from a message, once for as long as that very message is in use
    (by identity: the publisher keeps unchanged messages as they are). ``rotate()`` after
    each build forgets the messages that build did not use."""

    def __init__(self, compute: Callable[[Any], Any]) -> None:
        self._compute = compute
        self._kept: dict[int, tuple[Message, Any]] = {}
        self._used: dict[int, tuple[Message, Any]] = {}

    def __call__(self, message: Any) -> Any:
        entry = self._used.get(id(message)) or self._kept.get(id(message))
        if entry is None or entry[0] is not message:
            entry = (message, self._compute(message))
        self._used[id(message)] = entry
        return entry[1]

    def rotate(self) -> None:
        self._kept, self._used = self._used, {}


class EnvoyResources:
    """Builds Envoy's resources, each one once per distinct input.

    Parsing Envoy's documents into protobuf is the expensive part (611 ms for 1,000
    routes when everything was rebuilt on every change): a cluster whose input is
    unchanged is reused as built, and the listener and route configuration, which depend
    on the settings alone, are built once. Entries no longer used are dropped. So is
    serializing: each input's key and each cluster packed with its digest are computed
    once per message (at 1,000 chains a publish cost ~20 ms of CPU, mostly
    re-serializing what had not changed).
    """

    def __init__(
        self, listener: envoy_config.ListenerSettings, retire_after_s: float = RETIRE_AFTER_S
    ) -> None:
        self._settings = listener
        self._retire_after_s = retire_after_s
        self._listener: Message | None = None
        self._routes: Message | None = None  # the route configuration
        self._clusters: dict[bytes, Message] = {}
        self._key = _PerMessage(_key)
        self._packed = _PerMessage(envoy_resource)
        # The last build's clusters by name: what ext_proc may name.
        self._named: dict[str, Message] = {}
        # Dropped ones still in Envoy (module docstring): name -> (message, revision, monotonic time).
        self._retiring: dict[str, tuple[Message, int, float]] = {}

    def retired(self, applied: int, now: float) -> bool:
        """Whether some retiring cluster may go: ext_proc has `applied` the revision that
        dropped it, `RETIRE_AFTER_S` ago or more."""
        return any(
            rev <= applied and now - at >= self._retire_after_s for _, rev, at in self._retiring.values()
        )

    def build(
        self,
        providers: tuple[config_pb2.Provider, ...] | list[config_pb2.Provider],
        models: tuple[config_pb2.Model, ...] | list[config_pb2.Model],
        routes: tuple[config_pb2.Route, ...] | list[config_pb2.Route],
        revision: int = 0,
        applied: int | None = None,
        now: float = 0.0,
    ) -> dict[str, list[Any]]:
        """Envoy's resources for these inputs (at `revision`), plus the retiring ones that
        ext_proc may still name; with `applied` (the revision every ext_proc has applied)
        None, nothing retires: for tests and tools."""
        s, _key = self._settings, self._key
        if self._listener is None:
            self._listener = envoy_config.listener(s)
            self._routes = envoy_config.route_configuration(
                envoy_config.default_route(s),
                envoy_config.chain_route(s),
                envoy_config.files_route(s),
                streamed=envoy_config.streamed_body_route(s),
            )
        clusters: dict[bytes, Message] = {}

        def cached(key: bytes, make: Callable[[], Message]) -> Message:
            built = self._clusters.get(key) or make()
            clusters[key] = built
            return built

        out = [
            cached(b"p" + _key(p), lambda p=p: envoy_config.provider_cluster(p, s))  # type: ignore[misc]
            for p in providers
        ]
        model_by_slug = {m.slug: m for m in models}
        provider_by_name = {p.name: p for p in providers}
        # Each chain, then each variant a workspace's restriction cut from it (chain_variants.py):
        # a variant is a cluster of its own. A chain's cluster depends on its name and targets
        # only: its retries and timeouts (ext_proc's to send with each request) change nothing here.
        chains = [(route.cluster, [route.slug, *route.fallbacks]) for route in routes if route.cluster]
        for name, slugs in [*chains, *variant_clusters(routes)]:
            targets = [
                (model_by_slug[slug], provider_by_name[model_by_slug[slug].provider])
                for slug in slugs
                if slug in model_by_slug and model_by_slug[slug].provider in provider_by_name
            ]
            if len(targets) != len(slugs):  # the store keeps references valid; never serve a partial chain
                continue
            key = b"c" + name.encode() + b"".join(b"\0" + _key(m) + b"\0" + _key(p) for m, p in targets)
            out.append(cached(key, lambda n=name, t=targets: envoy_config.chain_cluster(n, t, s)))  # type: ignore[misc]
        self._clusters = clusters
        if applied is not None:
            named = {c.name: c for c in out}  # type: ignore[attr-defined]
            out = self._retire(named, revision, applied, now)
            self._named = named
        self._key.rotate()
        assert self._routes is not None
        return {CLUSTER: out, LISTENER: [self._listener], ROUTE: [self._routes]}

    def _retire(self, named: dict[str, Message], revision: int, applied: int, now: float) -> list[Message]:
        """The build's clusters plus those retiring (dropped now or before, not yet gone)."""
        for name, message in self._named.items():
            if name not in named:
                self._retiring.setdefault(name, (message, revision, now))
        keep: dict[str, tuple[Message, int, float]] = {}
        for name, item in self._retiring.items():
            _, dropped, at = item
            if name not in named and (dropped > applied or now - at < self._retire_after_s):
                keep[name] = item
        self._retiring = keep
        return [*named.values(), *(m for m, _, _ in keep.values())]

    def prepare(self, built: dict[str, list[Any]]) -> dict[str, dict[str, EnvoyResource]]:
        """Each resource of a build by type and name, versioned and serialized once while in use."""
        packed = self._packed
        out = {type_url: {item.name: packed(item) for item in items} for type_url, items in built.items()}
        packed.rotate()
        return out


def _key(message: Message) -> bytes:
    return message.SerializeToString(deterministic=True)


@dataclass(slots=True)
class _Published:
    """What the publisher has published, as far as Envoy's resources need it."""

    revision: int = -1
    providers: dict[str, config_pb2.Provider] = field(default_factory=dict)
    models: dict[str, config_pb2.Model] = field(default_factory=dict)
    routes: dict[str, config_pb2.Route] = field(default_factory=dict)  # with their variants
    # Workspaces' restrictions, which decide the routes' variants: by workspace id, and how
    # many workspaces have each distinct one.
    allowed: dict[str, Restriction] = field(default_factory=dict)
    restrictions: Counter[Restriction] = field(default_factory=Counter)
    secret: config_pb2.DataPlaneSecret | None = None  # what ext_proc has of it


@dataclass(slots=True)
class _Publish:
    revision: int
    delta: dict[str, TypeChanges]
    # type URL -> name -> resource; None when Envoy's inputs did not change
    envoy: dict[str, dict[str, EnvoyResource]] | None
    cpu_s: float = 0.0  # the worker thread's CPU time building it


class Publisher:
    def __init__(
        self,
        cache: EnvoyCache,
        session_factory: Callable[[], Session],
        listener: envoy_config.ListenerSettings,
        poll_interval_s: float = 0.5,
        delta: DeltaCache | None = None,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        retire_after_s: float = RETIRE_AFTER_S,
    ) -> None:
        self._ack_timeout_s = ack_timeout_s
        self._cache = cache
        self.delta = delta or DeltaCache()
        self._sessions = session_factory
        self._envoy = EnvoyResources(listener, retire_after_s)
        self._poll_interval_s = poll_interval_s
        self._wake = asyncio.Event()
        self._published = _Published()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def revision(self) -> int:
        return self._published.revision

    async def start(self) -> None:
        await self.publish()
        loop = asyncio.get_running_loop()

        def wake() -> None:  # called from the committing thread
            loop.call_soon_threadsafe(self._wake.set)

        self._unsubscribe = changes.subscribe(wake)
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._poll())]

    async def close(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def publish(self) -> None:
        """Publish what changed since the last publish; one at a time."""
        async with self._lock:
            started = time.perf_counter()
            applied = self.delta.applied_everywhere()  # read on the event loop, used by the worker
            result = await asyncio.to_thread(self._load, applied)
            if result is None:
                return
            if result.envoy is not None:
                await self._envoy_first(result.envoy)
            self.delta.apply(result.revision, result.delta)
            took_ms = (time.perf_counter() - started) * 1000
            level = logging.WARNING if took_ms > SLOW_PUBLISH_MS else logging.DEBUG
            log.log(
                level,
                "published revision %s in %.0f ms (%.0f ms CPU building it%s)",
                *(result.revision, took_ms, result.cpu_s * 1000, ", Envoy's too" if result.envoy else ""),
            )

    async def _envoy_first(self, resources: dict[str, dict[str, EnvoyResource]]) -> None:
        """Install Envoy's resources and wait for every Envoy's answer to those that changed
        among the ones ext_proc names."""
        changed = {type_url: self._cache.install(type_url, items) for type_url, items in resources.items()}
        referenced = {t: names for t in REFERENCED_BY_EXT_PROC if (names := changed.get(t))}
        if not referenced:
            return
        silent = await self._cache.answered(referenced, self._ack_timeout_s)
        if silent:
            log.warning(
                "Envoy %s has not answered the new clusters and routes after %.0f s: "
                "publishing ext_proc's changes anyway",
                *(", ".join(silent), self._ack_timeout_s),
            )

    def _load(self, applied: int) -> _Publish | None:
        cpu_started, now = time.thread_time(), time.monotonic()
        published = self._published
        since = max(published.revision, 0)
        with self._sessions() as session:
            found = load_changes(session, since)
            retired = self._envoy.retired(applied, now)
            if found.revision == published.revision and not retired:
                return None
            secret = data_plane_secret(session)  # created on the first publish; read after the changes
        changed_restrictions = _merge(published, found)
        # A restriction that appeared or disappeared changes the variants of the routes it names.
        rerouted = _reroute(published, changed_restrictions, {r.slug for r in found.routes})
        delta = _delta(found, rerouted)
        if secret != published.secret:
            delta[DATA_PLANE_SECRET] = TypeChanges([resource(secret.name, found.revision, secret)])
            published.secret = secret
        envoy_changed = published.revision < 0 or any(
            (
                retired,
                found.providers,
                found.models,
                found.routes,
                rerouted,
                *(found.removed.get(k) for k in _ENVOY_KINDS),
            )
        )
        envoy = None
        if envoy_changed:
            built = self._envoy.build(  # sorted: the same content has the same version on every replica
                [published.providers[k] for k in sorted(published.providers)],
                [published.models[k] for k in sorted(published.models)],
                [published.routes[k] for k in sorted(published.routes)],
                *(found.revision, applied, now),
            )
            envoy = self._envoy.prepare(built)
        published.revision = found.revision
        return _Publish(found.revision, delta, envoy, time.thread_time() - cpu_started)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.publish()
            except Exception:
                log.exception("publishing the configuration failed; retrying")
                await asyncio.sleep(0.2)
                self._wake.set()

    async def _poll(self) -> None:
        """Other replicas' commits: a publish with nothing new costs one indexed read of the revision."""
        while True:
            await asyncio.sleep(self._poll_interval_s)
            self._wake.set()


_ENVOY_KINDS = ("providers", "models", "routes")


def _delta(found: Changes, rerouted: list[config_pb2.Route]) -> dict[str, TypeChanges]:
    revision = found.revision
    upserts: dict[str, list[Any]] = {
        _T + "Provider": [resource(p.name, revision, p) for p in found.providers],
        _T + "Model": [resource(m.slug, revision, m) for m in found.models],
        _T + "Workspace": [resource(w.id, revision, w) for w in found.workspaces],
        _T + "Route": [resource(r.slug, revision, r) for r in (*found.routes, *rerouted)],
        _T + "ApiKey": [resource(k.id, revision, k) for k in found.api_keys],
    }
    return {
        type_url: TypeChanges(items, list(found.removed.get(_KINDS[type_url], ())))
        for type_url, items in upserts.items()
    }


def _merge(published: _Published, found: Changes) -> set[Restriction]:
    """Take in what was found; the restrictions that appeared or disappeared.

    Workspaces first: the routes written now get their variants from the restrictions as
    of this revision.
    """
    if found.since == 0:
        published.providers.clear()
        published.models.clear()
        published.routes.clear()
        published.allowed.clear()
        published.restrictions.clear()
    changed: set[Restriction] = set()
    for w in found.workspaces:
        _restrict(published, w.id, restriction(w), changed)
    for workspace_id in found.removed.get("workspaces", ()):
        _restrict(published, workspace_id, None, changed)
    for route in found.routes:
        set_variants(route, published.restrictions.keys())
    published.providers.update((p.name, p) for p in found.providers)
    published.models.update((m.slug, m) for m in found.models)
    published.routes.update((r.slug, r) for r in found.routes)
    for kind, table in (
        ("providers", published.providers),
        ("models", published.models),
        ("routes", published.routes),
    ):
        for name in found.removed.get(kind, ()):
            table.pop(name, None)  # type: ignore[attr-defined]
    return changed


def _restrict(
    published: _Published, workspace_id: str, new: Restriction | None, changed: set[Restriction]
) -> None:
    old = published.allowed.pop(workspace_id, None)
    if new is not None:
        published.allowed[workspace_id] = new
    if old == new:
        return
    if old is not None:
        published.restrictions[old] -= 1
        if not published.restrictions[old]:
            del published.restrictions[old]
            changed.add(old)
    if new is not None:
        if new not in published.restrictions:
            changed.add(new)
        published.restrictions[new] += 1


def _reroute(published: _Published, changed: set[Restriction], written: set[str]) -> list[config_pb2.Route]:
    """The published routes (other than those just `written`) whose variants `changed` alters, updated.

    Only the routes a changed restriction names are looked at: a workspace change costs
    work proportional to its allowed models, not to the number of chains.
    """
    out = []
    restrictions = published.restrictions.keys()
    for slug in sorted(affected_routes(changed) - written):
        route = published.routes.get(slug)
        if route is None or not route.cluster:
            continue
        updated = config_pb2.Route()
        updated.CopyFrom(route)
        if set_variants(updated, restrictions):
            published.routes[slug] = updated
            out.append(updated)
    return out
