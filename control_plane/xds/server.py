"""The ADS server: state-of-the-world xDS for Envoy and for ext_proc.

One cache of versioned resources per type URL. Envoy subscribes to clusters,
listeners and routes; ext_proc to the gateway's own types (proto/infery_proto).
A type's version is a digest of its content, so a reconnecting client that
already has the content is not disturbed, and versions stay meaningful across
control-plane restarts and replicas.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

log = logging.getLogger("infery.control_plane.xds")

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_T = "type.googleapis.com/"
CLUSTER = _T + "envoy.config.cluster.v3.Cluster"
LISTENER = _T + "envoy.config.listener.v3.Listener"
ROUTE = _T + "envoy.config.route.v3.RouteConfiguration"
# Adding: clusters before the listeners and routes that point at them.
PUSH_ORDER = (CLUSTER, LISTENER, ROUTE)


@dataclass(slots=True)
class _TypeState:
    version: str
    resources: list[any_pb2.Any]


class XdsCache:
    """The current resources of every type, and a broadcast of their changes."""

    def __init__(self) -> None:
        self._types: dict[str, _TypeState] = {}
        self._changed = asyncio.Event()

    def set(self, type_url: str, resources: Iterable[Message]) -> bool:
        """Replace a type's resources; returns whether anything changed."""
        packed = []
        digest = hashlib.sha256()
        for resource in resources:
            any_ = any_pb2.Any()
            any_.Pack(resource, type_url_prefix="type.googleapis.com/")
            packed.append(any_)
            digest.update(any_.SerializeToString(deterministic=True))
        version = digest.hexdigest()[:16]
        current = self._types.get(type_url)
        if current is not None and current.version == version:
            return False
        self._types[type_url] = _TypeState(version, packed)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return True

    def get(self, type_url: str) -> _TypeState | None:
        return self._types.get(type_url)

    def changed(self) -> asyncio.Event:
        return self._changed


@dataclass(slots=True)
class _Subscription:
    sent_version: str | None = None
    nonce: str = ""
    rejected_version: str | None = None


@dataclass(slots=True)
class _Stream:
    subscriptions: dict[str, _Subscription] = field(default_factory=dict)
    peer: str = ""


_nonces = itertools.count(1)


def _ordered(type_urls: Iterable[str]) -> list[str]:
    rank = {t: i for i, t in enumerate(PUSH_ORDER)}
    return sorted(type_urls, key=lambda t: rank.get(t, len(rank)))


def ads_handler(cache: XdsCache) -> grpc.GenericRpcHandler:
    async def stream_resources(
        requests: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        state = _Stream(peer=context.peer())
        inbox: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for req in requests:
                    inbox.put_nowait(req)
            finally:
                inbox.put_nowait(None)

        pump_task = asyncio.create_task(pump())
        try:
            while True:
                changed = cache.changed()
                for response in _pending(cache, state):
                    yield response
                next_request = asyncio.ensure_future(inbox.get())
                waiter = asyncio.ensure_future(changed.wait())
                done, _ = await asyncio.wait({next_request, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if next_request not in done:
                    next_request.cancel()
                    continue
                waiter.cancel()
                req = next_request.result()
                if req is None:
                    return
                _receive(state, req)
        finally:
            pump_task.cancel()

    return grpc.method_handlers_generic_handler(
        ADS_SERVICE,
        {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                stream_resources,
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=discovery_pb2.DiscoveryResponse.SerializeToString,
            )
        },
    )


def _receive(state: _Stream, req: discovery_pb2.DiscoveryRequest) -> None:
    sub = state.subscriptions.get(req.type_url)
    if sub is None:
        # A client reconnecting tells what it has: content-digest versions let us skip resending it.
        state.subscriptions[req.type_url] = _Subscription(sent_version=req.version_info or None)
        return
    if req.response_nonce and req.response_nonce != sub.nonce:
        return  # answers an older response; a newer one is on its way
    if req.HasField("error_detail"):
        # Envoy keeps its last good config; never re-send the rejected version.
        sub.rejected_version = sub.sent_version
        log.error(
            "%s rejected %s version %s: %s",
            state.peer,
            req.type_url,
            sub.sent_version,
            req.error_detail.message[:500],
        )


def _pending(cache: XdsCache, state: _Stream) -> list[discovery_pb2.DiscoveryResponse]:
    out = []
    for type_url in _ordered(state.subscriptions):
        sub = state.subscriptions[type_url]
        current = cache.get(type_url)
        if current is None or current.version in (sub.sent_version, sub.rejected_version):
            continue
        sub.sent_version = current.version
        sub.nonce = str(next(_nonces))
        out.append(
            discovery_pb2.DiscoveryResponse(
                version_info=current.version,
                resources=current.resources,
                type_url=type_url,
                nonce=sub.nonce,
            )
        )
    return out
