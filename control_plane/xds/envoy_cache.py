"""Envoy's resources over delta xDS: each cluster, the listener and the route configuration a
resource of its own, sent only when it changed.

Envoy subscribes over `DeltaAggregatedResources` (bootstrap: ADS `DELTA_GRPC`): clusters and
listeners as wildcards, the route configuration by name. Under state of the world every
update re-sent, and made Envoy re-read, the whole cluster list: at 1,000 chains 20-40 ms of
its main thread per CDS update for a change to one chain. Now a changed chain costs Envoy
that one cluster.

Versions are digests of each resource's content, so they mean the same on every
control-plane replica and across restarts: a reconnecting Envoy names the versions it has
(`initial_resource_versions`) and gets only what differs, plus the removal of what is gone.

Per stream and type, at most one response is unanswered: Envoy applies a type's responses
in order, and versions sent while it is busy used to queue up, each stale one applied before
the newest. Waiting for the answer, the next response carries what changed since, newest
versions only. What each Envoy has answered (ACK or NACK) is kept per resource, so the
publisher can wait for exactly the resources it changed (`EnvoyCache.answered`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from control_plane.xds.stream_io import next_request, resources_field

log = logging.getLogger("infery.control_plane.xds")

_T = "type.googleapis.com/"
CLUSTER = _T + "envoy.config.cluster.v3.Cluster"
LISTENER = _T + "envoy.config.listener.v3.Listener"
ROUTE = _T + "envoy.config.route.v3.RouteConfiguration"
# Adding: clusters before the listeners and routes that point at them.
ENVOY_TYPES = (CLUSTER, LISTENER, ROUTE)
WILDCARD = "*"


class EnvoyResource(NamedTuple):
    """One resource as it goes on the wire: its version (a digest of its content) and its
    serialized `discovery_pb2.Resource`, made once and shared by every stream."""

    version: str
    body: bytes


def envoy_resource(message: Message) -> EnvoyResource:
    """``message`` (a Cluster, Listener or RouteConfiguration) serialized deterministically,
    versioned by a digest of it. Envoy's documents are parsed in a canonical form
    (`envoy_config.parse`), so the same configuration has the same bytes and version in every
    control-plane process."""
    value = message.SerializeToString(deterministic=True)
    any_ = any_pb2.Any(type_url=_T + message.DESCRIPTOR.full_name, value=value)
    version = hashlib.sha256(value).hexdigest()[:16]
    name: str = message.name  # type: ignore[attr-defined]
    return EnvoyResource(
        version, discovery_pb2.Resource(name=name, version=version, resource=any_).SerializeToString()
    )


@dataclass(slots=True)
class _Subscription:
    """One Envoy's subscription to one type."""

    wildcard: bool
    names: set[str] = field(default_factory=set)  # named resources (RDS); with a wildcard, unused
    sent: dict[str, str] = field(default_factory=dict)  # what it has or is applying: name -> version
    answered: dict[str, str] = field(default_factory=dict)  # what it has answered (ACK or NACK)
    # The response not yet answered: its nonce, and what it set (None: removed).
    in_flight: tuple[str, dict[str, str | None]] | None = None
    # A first response, even an empty one, is owed to a subscriber that has nothing: Envoy
    # waits for it to finish starting (15 s, `initial_fetch_timeout`, when no cluster exists).
    owed: bool = False

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names


@dataclass(slots=True, eq=False)
class _EnvoyStream:
    peer: str
    subscriptions: dict[str, _Subscription] = field(default_factory=dict)


class EnvoyCache:
    """Envoy's current resources by type and name, a broadcast of their changes, and each
    connected Envoy's answers, resource by resource."""

    def __init__(self) -> None:
        self._types: dict[str, dict[str, EnvoyResource]] = {}
        self._changed = asyncio.Event()
        self._streams: list[_EnvoyStream] = []
        self._progress = asyncio.Event()  # set (and replaced) on every answer and disconnection
        self._nonces = 0

    def install(self, type_url: str, resources: Mapping[str, EnvoyResource]) -> set[str]:
        """Replace a type's resources; the names added, changed or removed."""
        current = self._types.get(type_url, {})
        changed = {
            name
            for name, item in resources.items()
            if (old := current.get(name)) is None or old.version != item.version
        }
        changed |= current.keys() - resources.keys()
        if changed or type_url not in self._types:
            self._types[type_url] = dict(resources)
            woken, self._changed = self._changed, asyncio.Event()
            woken.set()
        return changed

    def get(self, type_url: str) -> dict[str, EnvoyResource]:
        return self._types.get(type_url, {})

    def _progressed(self) -> None:
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()

    def _has_answered(self, stream: _EnvoyStream, changed: Mapping[str, Iterable[str]]) -> bool:
        """Whether ``stream`` answered the current version (or the removal) of each changed
        resource it subscribes to (a type it has not subscribed to yet arrives at its newest)."""
        for type_url, names in changed.items():
            sub = stream.subscriptions.get(type_url)
            if sub is None:
                continue
            current = self._types.get(type_url, {})
            for name in names:
                if not sub.wants(name):
                    continue
                item = current.get(name)
                if sub.answered.get(name) != (item.version if item is not None else None):
                    return False
        return True

    async def answered(self, changed: Mapping[str, Iterable[str]], timeout_s: float) -> list[str]:
        """Wait until every connected Envoy has answered (ACK or NACK) the current version of
        each of the ``changed`` resources (type URL -> names), or disconnected; the peers
        still silent after ``timeout_s``.

        A NACK counts as an answer: the Envoy keeps its previous version of what it refused
        and the rejection is logged as an error; holding everything else back for it would
        freeze the whole gateway's configuration on one bad resource.
        """
        changed = {type_url: tuple(names) for type_url, names in changed.items()}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            progress = self._progress
            silent = [s.peer for s in self._streams if not self._has_answered(s, changed)]
            remaining = deadline - loop.time()
            if not silent or remaining <= 0:
                return silent
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), remaining)

    def _nonce(self) -> str:
        self._nonces += 1
        return f"e{self._nonces}"

    def _pending(self, stream: _EnvoyStream) -> list[bytes]:
        """The responses due on ``stream``: per type without one in flight, what changed
        since what it was sent, in `ENVOY_TYPES` order."""
        out = []
        rank = {t: i for i, t in enumerate(ENVOY_TYPES)}
        for type_url in sorted(stream.subscriptions, key=lambda t: rank.get(t, len(rank))):
            sub = stream.subscriptions[type_url]
            if sub.in_flight is not None:
                continue
            current = self._types.get(type_url, {})
            names = current.keys() if sub.wildcard else sub.names & current.keys()
            new = [n for n in names if sub.sent.get(n) != current[n].version]
            removed = [n for n in sub.sent if n not in current]
            if not new and not removed and not sub.owed:
                continue
            sub.owed = False
            sets: dict[str, str | None] = {n: current[n].version for n in new}
            sets.update(dict.fromkeys(removed))
            nonce = self._nonce()
            sub.in_flight = (nonce, sets)
            for name in removed:
                del sub.sent[name]
            sub.sent.update((n, current[n].version) for n in new)
            header = discovery_pb2.DeltaDiscoveryResponse(
                type_url=type_url, removed_resources=removed, nonce=nonce
            ).SerializeToString()
            out.append(header + b"".join(resources_field(current[n].body) for n in new))
        return out

    def _receive(self, stream: _EnvoyStream, req: discovery_pb2.DeltaDiscoveryRequest) -> None:
        """Take in a request: a new subscription (with what Envoy already has), a change of
        the names subscribed, an answer to the response in flight."""
        type_url = req.type_url
        sub = stream.subscriptions.get(type_url)
        if sub is None:
            subscribe = set(req.resource_names_subscribe)
            # No names on the first request is the legacy wildcard; "*" the explicit one.
            sub = _Subscription(wildcard=not subscribe or WILDCARD in subscribe, names=subscribe - {WILDCARD})
            # A reconnecting Envoy has these: only what differs is sent, what is gone removed.
            sub.sent = dict(req.initial_resource_versions)
            sub.answered = dict(req.initial_resource_versions)
            sub.owed = not sub.sent
            stream.subscriptions[type_url] = sub
            return
        for name in req.resource_names_subscribe:
            if name == WILDCARD:
                sub.wildcard = True
            else:
                sub.names.add(name)
        for name in req.resource_names_unsubscribe:
            if name == WILDCARD:
                sub.wildcard = False
            else:
                sub.names.discard(name)
        for name in [n for n in sub.sent if not sub.wants(n)]:  # Envoy dropped them itself
            del sub.sent[name]
            sub.answered.pop(name, None)
        if not req.response_nonce or sub.in_flight is None or req.response_nonce != sub.in_flight[0]:
            return
        for name, version in sub.in_flight[1].items():
            if version is None:
                sub.answered.pop(name, None)
            else:
                sub.answered[name] = version
        sub.in_flight = None
        if req.HasField("error_detail"):
            # Envoy keeps its last good version of what it refused; that version is not re-sent.
            log.error("%s rejected %s: %s", stream.peer, type_url, req.error_detail.message[:500])

    async def serve(
        self,
        peer: str,
        first: discovery_pb2.DeltaDiscoveryRequest,
        inbox: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest | None],
    ) -> AsyncIterator[bytes]:
        """One Envoy's stream: ``first`` request, then the rest from ``inbox`` (None: gone)."""
        stream = _EnvoyStream(peer)
        self._streams.append(stream)
        try:
            self._receive(stream, first)
            while True:
                changed = self._changed
                for response in self._pending(stream):
                    yield response
                arrived, req = await next_request(inbox, changed)
                if not arrived:
                    continue  # the configuration changed first: send what is pending
                if req is None:
                    return
                self._receive(stream, req)
                self._progressed()
        finally:
            self._streams.remove(stream)
            self._progressed()
