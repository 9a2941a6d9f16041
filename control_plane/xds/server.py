"""The ADS server: delta xDS for Envoy and for ext_proc, on one `DeltaAggregatedResources`.

Envoy subscribes to clusters, listeners and routes (`envoy_cache.EnvoyCache`): each a
resource of its own, versioned by a digest of its content, sent only when it changed.

ext_proc subscribes to the gateway's own types (proto/infery_proto) (`DeltaCache`): every
key, model, workspace... is a resource of its own whose version is the revision that last
wrote it, so a change costs work proportional to the change, on the control plane, on the
wire and in ext_proc. Responses are small by construction (`MAX_DELTA_RESOURCES`,
`MAX_DELTA_BYTES`): a subscriber's first load of 10^5 keys arrives in chunks, and only the
last chunk of a push carries `system_version_info` (the revision), which tells the
subscriber that it has the whole push.

A stream is one kind of subscriber, told by the type of its first request: Envoy's and
ext_proc's types are kept apart (the attempt-grant secret never reaches Envoy).

Both caches know their connected streams and what each has answered, so the publisher can
order a change across the two (`EnvoyCache.answered`, `DeltaCache.applied_everywhere`):
ext_proc names the cluster each request goes to, so a cluster must be in every Envoy before
ext_proc may name it, and stay there until ext_proc no longer does
(`control_plane/xds/publisher.py`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from control_plane.xds.envoy_cache import ENVOY_TYPES, EnvoyCache
from control_plane.xds.stream_io import next_request, pump, resources_field

log = logging.getLogger("infery.control_plane.xds")

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
# One delta response: ~1 ms of decoding for a subscriber (~4 us per key; 250 keys are ~72 KB),
# far below any gRPC message limit.
MAX_DELTA_RESOURCES = 250
MAX_DELTA_BYTES = 1024 * 1024

# The gRPC server's HTTP/2 keepalive policy. Envoy pings its xDS connection every 10 s
# (envoy/bootstrap.yaml, `connection_keepalive`); gRPC's default policy refuses pings more
# often than every 5 minutes on a connection without data and answers the third one with
# GOAWAY "too_many_pings", which reset Envoy's ADS stream about once a minute. Pings at
# least 5 s apart are now welcome; a client pinging faster is still cut off (ping flood).
MIN_CLIENT_PING_INTERVAL_MS = 5_000


def server_options(
    min_client_ping_interval_ms: int = MIN_CLIENT_PING_INTERVAL_MS,
) -> tuple[tuple[str, int], ...]:
    # gRPC's name for the server's minimum interval between received pings (the C core's
    # GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS).
    return (
        ("grpc.http2.min_ping_interval_without_data_ms", min_client_ping_interval_ms),
        ("grpc.keepalive_permit_without_calls", 1),
    )


SERVER_OPTIONS = server_options()


class Packed(NamedTuple):
    """One resource as it goes on the wire: a serialized `resources` field of a DeltaDiscoveryResponse.

    Serialized once by the publisher (off the event loop) and shared by every stream: a
    response is its header's bytes followed by these, concatenated (protobuf merges repeated
    fields), so a first load of 10^5 keys costs a join, not 10^5 message copies per stream.
    Bytes are also ~4x smaller in memory than a protobuf object with its arena.
    """

    name: str
    wire: bytes


def resource(name: str, version: int, message: Message) -> Packed:
    any_ = any_pb2.Any()
    any_.Pack(message, type_url_prefix="type.googleapis.com/")
    body = discovery_pb2.Resource(name=name, version=str(version), resource=any_).SerializeToString()
    return Packed(name, resources_field(body))


class _TypeEntries:
    """A type's resources: ``versions`` in the order of versions (a written entry moves to the
    end), ``wires`` its bytes (None: removed at that version, a tombstone).

    Two dicts of strings, ints and bytes on purpose: the garbage collector never tracks them,
    so at 10^5 keys a collection walks none of them. An object per entry (it was a dataclass)
    put 10^5 objects in every full collection of the control plane: pauses of ~15-20 ms
    (measured) in the middle of its pushes.
    """

    __slots__ = ("versions", "wires")

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self.wires: dict[str, bytes | None] = {}

    def write(self, name: str, version: int, wire: bytes | None) -> None:
        self.versions.pop(name, None)
        self.versions[name] = version
        self.wires[name] = wire


@dataclass(slots=True)
class TypeChanges:
    resources: list[Packed] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


class DeltaCache:
    """Every resource of the delta types, each with the revision that last wrote it.

    Per type a dict in the order of versions (a written entry moves to the end), so
    "what changed since version v" walks back from the end and stops at the first older
    entry: O(changes), not O(resources). Removed resources stay as version-stamped
    tombstones for subscribers that had them.
    """

    def __init__(self) -> None:
        self._types: dict[str, _TypeEntries] = {}
        self.revision = 0
        self._changed = asyncio.Event()
        self._streams: list[_DeltaStream] = []

    def apply(self, revision: int, changes: dict[str, TypeChanges]) -> None:
        """Record the changes of `revision` (non-decreasing) in one step, then wake the streams."""
        for type_url, change in changes.items():
            entries = self._types.get(type_url)
            if entries is None:
                entries = self._types[type_url] = _TypeEntries()
            for item in change.resources:
                entries.write(item.name, revision, item.wire)
            for name in change.removed:
                if name in entries.wires:
                    entries.write(name, revision, None)
        self.revision = max(self.revision, revision)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def live(self, type_url: str) -> list[Packed]:
        entries = self._types.get(type_url)
        if entries is None:
            return []
        wires = entries.wires
        return [Packed(name, wire) for name in entries.versions if (wire := wires[name]) is not None]

    def since(self, type_url: str, version: int) -> TypeChanges:
        out = TypeChanges()
        entries = self._types.get(type_url)
        if entries is None:
            return out
        versions, wires = entries.versions, entries.wires
        for name in reversed(versions):
            if versions[name] <= version:
                break
            wire = wires[name]
            if wire is None:
                out.removed.append(name)
            else:
                out.resources.append(Packed(name, wire))
        out.resources.reverse()
        return out

    def changed(self) -> asyncio.Event:
        return self._changed

    def _attach(self, stream: _DeltaStream) -> None:
        self._streams.append(stream)

    def _detach(self, stream: _DeltaStream) -> None:
        self._streams.remove(stream)

    def applied_everywhere(self) -> int:
        """The newest revision every connected subscriber has applied whole (answered every
        response of); with none connected, every revision (one connecting gets the newest whole)."""
        return min((s.caught_up for s in self._streams), default=sys.maxsize)


@dataclass(slots=True, eq=False)
class _DeltaStream:
    """One subscriber: the revision it was sent of each type, and the last response of each
    push it has not answered yet."""

    peer: str
    sent: dict[str, int | None] = field(default_factory=dict)  # None: subscribed, nothing sent yet
    unanswered: dict[str, str] = field(default_factory=dict)  # type URL -> the push's last nonce
    caught_up: int = -1  # the newest revision it has applied whole

    def settle(self) -> None:
        """Advance `caught_up` when every response sent has been answered."""
        if self.sent and not self.unanswered and all(have is not None for have in self.sent.values()):
            self.caught_up = max(self.caught_up, min(have for have in self.sent.values() if have is not None))


def _chunks(type_url: str, change: TypeChanges, revision: int, nonce: str | None = None) -> Iterator[bytes]:
    """A push as serialized responses of at most MAX_DELTA_RESOURCES / ~MAX_DELTA_BYTES each;
    only the last one carries the revision (`system_version_info`)."""
    batch: list[bytes] = []
    size = 0
    for item in change.resources:
        if batch and (len(batch) >= MAX_DELTA_RESOURCES or size + len(item.wire) > MAX_DELTA_BYTES):
            yield _response(type_url, batch)
            batch, size = [], 0
        batch.append(item.wire)
        size += len(item.wire)
    removed, most = change.removed, MAX_DELTA_RESOURCES * 4  # a removal is just a name
    while len(removed) > most:
        yield _response(type_url, batch, removed[:most])
        batch, removed = [], removed[most:]
    yield _response(type_url, batch, removed, str(revision), nonce)


def _response(
    type_url: str,
    resources: list[bytes],
    removed: Iterable[str] = (),
    version: str = "",
    nonce: str | None = None,
) -> bytes:
    header = discovery_pb2.DeltaDiscoveryResponse(
        type_url=type_url, removed_resources=removed, system_version_info=version, nonce=nonce or _nonce()
    )
    return header.SerializeToString() + b"".join(resources)


_nonces = itertools.count(1)


def _nonce() -> str:
    return str(next(_nonces))


def ads_handler(
    envoy: EnvoyCache, delta: DeltaCache | None = None, delta_order: Iterable[str] = ()
) -> grpc.GenericRpcHandler:
    """`DeltaAggregatedResources`: Envoy's streams to ``envoy``, ext_proc's to ``delta``."""
    rank = {t: i for i, t in enumerate(delta_order)}

    async def stream_resources(
        requests: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        inbox: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = asyncio.Queue()
        pump_task = asyncio.create_task(pump(requests, inbox))
        try:
            first = await inbox.get()
            if first is None:
                return
            if first.type_url in ENVOY_TYPES:
                served = envoy.serve(context.peer(), first, inbox)
            elif delta is not None:
                served = _serve_delta(delta, rank, context.peer(), first, inbox)
            else:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no resources of type {first.type_url}")
                return
            async for response in served:
                yield response
        finally:
            pump_task.cancel()

    method = grpc.stream_stream_rpc_method_handler(
        stream_resources,
        request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
        response_serializer=None,  # responses are serialized already
    )
    return grpc.method_handlers_generic_handler(ADS_SERVICE, {"DeltaAggregatedResources": method})


async def _serve_delta(
    cache: DeltaCache,
    rank: dict[str, int],
    peer: str,
    first: discovery_pb2.DeltaDiscoveryRequest,
    inbox: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest | None],
) -> AsyncIterator[bytes]:
    """One ext_proc's stream, a wildcard subscriber of the delta types: a new subscription
    gets every live resource (in chunks), then only what changed. Types are served in the
    handler's order, so that referenced resources arrive first."""
    stream = _DeltaStream(peer)
    sent = stream.sent  # type URL -> the revision this stream has
    inbox.put_nowait(first)  # handled below like any other
    cache._attach(stream)
    try:
        while True:
            changed = cache.changed()
            for type_url in sorted(sent, key=lambda t: rank.get(t, len(rank))):
                have = sent[type_url]
                revision = cache.revision
                if have == revision:
                    continue
                change = TypeChanges(cache.live(type_url)) if have is None else cache.since(type_url, have)
                sent[type_url] = revision
                if have is not None and not change.resources and not change.removed:
                    continue
                stream.unanswered[type_url] = nonce = _nonce()
                for response in _chunks(type_url, change, revision, nonce):
                    yield response
            stream.settle()  # types with nothing new are as far as the revision
            arrived, req = await next_request(inbox, changed)
            if not arrived:
                continue  # the configuration changed first: send what is pending
            if req is None:
                return
            if req.type_url not in sent:
                sent[req.type_url] = None
                continue
            if req.HasField("error_detail"):
                log.error("%s could not apply %s: %s", peer, req.type_url, req.error_detail.message[:500])
            if req.response_nonce and stream.unanswered.get(req.type_url) == req.response_nonce:
                del stream.unanswered[req.type_url]  # it has applied the whole push
                stream.settle()
    finally:
        cache._detach(stream)
