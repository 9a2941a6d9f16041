"""The ADS server: state-of-the-world xDS for Envoy, delta xDS for ext_proc.

Envoy subscribes to clusters, listeners and routes (`XdsCache`, state of the
world): a type's version is a digest of its content, so a reconnecting client
that already has the content is not disturbed, and versions stay meaningful
across control-plane restarts and replicas.

ext_proc subscribes to the gateway's own types (proto/infery_proto) over
`DeltaAggregatedResources` (`DeltaCache`): every key, model, workspace... is a
resource of its own whose version is the revision that last wrote it, so a
change costs work proportional to the change, on the control plane, on the wire
and in ext_proc. Responses are small by construction (`MAX_DELTA_RESOURCES`,
`MAX_DELTA_BYTES`): a subscriber's first load of 10^5 keys arrives in chunks,
and only the last chunk of a push carries `system_version_info` (the revision),
which tells the subscriber that it has the whole push.

Both caches know their connected streams and what each has answered, so the
publisher can order a change across the two protocols (`XdsCache.answered`,
`DeltaCache.applied_everywhere`): ext_proc names the cluster each request goes to, so a
cluster must be in every Envoy before ext_proc may name it, and stay there until
ext_proc no longer does (`control_plane/xds/publisher.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

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


@dataclass(slots=True)
class _TypeState:
    version: str
    resources: list[any_pb2.Any]


class PackedResource(NamedTuple):
    """A resource packed for a state-of-the-world response, and the digest of its content."""

    any: any_pb2.Any
    digest: bytes


def pack(resource: Message) -> PackedResource:
    any_ = any_pb2.Any()
    any_.Pack(resource, type_url_prefix="type.googleapis.com/")
    return PackedResource(any_, hashlib.sha256(any_.SerializeToString(deterministic=True)).digest())


def prepare(resources: Iterable[Message], packed: Callable[[Message], PackedResource] = pack) -> _TypeState:
    """Pack a type's resources (``packed`` may remember those packed before) and version them
    by a digest of their content."""
    out = []
    digest = hashlib.sha256()
    for resource in resources:
        item = packed(resource)
        out.append(item.any)
        digest.update(item.digest)
    return _TypeState(digest.hexdigest()[:16], out)


class XdsCache:
    """The current resources of every type, a broadcast of their changes, and the connected
    Envoys' answers to them."""

    def __init__(self) -> None:
        self._types: dict[str, _TypeState] = {}
        self._changed = asyncio.Event()
        self._streams: list[_Stream] = []
        self._progress = asyncio.Event()  # set (and replaced) on every answer and disconnection

    def set(self, type_url: str, resources: Iterable[Message]) -> bool:
        """Replace a type's resources; returns whether anything changed."""
        return self.install(type_url, prepare(resources))

    def install(self, type_url: str, state: _TypeState) -> bool:
        """Install a type's resources packed by `prepare` (which may run in another thread)."""
        current = self._types.get(type_url)
        if current is not None and current.version == state.version:
            return False
        self._types[type_url] = state
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return True

    def get(self, type_url: str) -> _TypeState | None:
        return self._types.get(type_url)

    def changed(self) -> asyncio.Event:
        return self._changed

    def _attach(self, stream: _Stream) -> None:
        self._streams.append(stream)

    def _detach(self, stream: _Stream) -> None:
        self._streams.remove(stream)
        self._progressed()

    def _progressed(self) -> None:
        progress, self._progress = self._progress, asyncio.Event()
        progress.set()

    def _has_answered(self, stream: _Stream, type_urls: Iterable[str]) -> bool:
        """Whether ``stream`` answered the current version of each of ``type_urls`` (a type it
        has not subscribed to yet arrives whole, at its newest, when it does)."""
        for type_url in type_urls:
            sub, current = stream.subscriptions.get(type_url), self._types.get(type_url)
            if sub is None or current is None:
                continue
            if current.version == sub.rejected_version:
                continue
            if current.version != sub.sent_version or sub.awaiting_answer:
                return False
        return True

    async def answered(self, type_urls: Iterable[str], timeout_s: float) -> list[str]:
        """Wait until every connected Envoy has answered (ACK or NACK) the current version of
        each of ``type_urls``, or disconnected; the peers still silent after ``timeout_s``.

        A NACK counts as an answer: the Envoy keeps its previous configuration and the
        rejection is logged as an error (`_receive`); holding everything else back for it
        would freeze the whole gateway's configuration on one bad resource.
        """
        types = tuple(type_urls)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            progress = self._progress
            silent = [s.peer for s in self._streams if not self._has_answered(s, types)]
            remaining = deadline - asyncio.get_running_loop().time()
            if not silent or remaining <= 0:
                return silent
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), remaining)


@dataclass(slots=True)
class _Subscription:
    sent_version: str | None = None
    nonce: str = ""
    rejected_version: str | None = None
    # A response sent and not yet answered (ACK or NACK). The next version waits for the
    # answer: Envoy applies a type's responses one after another, and at 1,000 chains one
    # CDS update costs it 20-150 ms, so versions sent while it was busy queued up and it
    # applied each stale one before the last (the last chain took ~0.8 s to arrive).
    # Waiting, it skips from the version it applied to the newest.
    awaiting_answer: bool = False


@dataclass(slots=True, eq=False)
class _Stream:
    subscriptions: dict[str, _Subscription] = field(default_factory=dict)
    peer: str = ""


_nonces = itertools.count(1)


def _ordered(type_urls: Iterable[str]) -> list[str]:
    rank = {t: i for i, t in enumerate(PUSH_ORDER)}
    return sorted(type_urls, key=lambda t: rank.get(t, len(rank)))


_R = TypeVar("_R")  # a discovery request, state of the world or delta


async def _pump(requests: AsyncIterator[_R], inbox: asyncio.Queue[_R | None]) -> None:
    """Move a stream's requests into ``inbox`` (``None`` when the client is gone), so that the
    handler can wait on the next request and on a configuration change at once."""
    try:
        async for req in requests:
            inbox.put_nowait(req)
    finally:
        inbox.put_nowait(None)


async def _next_request(inbox: asyncio.Queue[_R | None], changed: asyncio.Event) -> tuple[bool, _R | None]:
    """``(True, request)`` for the stream's next request (``None``: the client is gone), or
    ``(False, None)`` when the configuration changes first (the request stays queued)."""
    next_request = asyncio.ensure_future(inbox.get())
    waiter = asyncio.ensure_future(changed.wait())
    done, _ = await asyncio.wait({next_request, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if next_request not in done:
        next_request.cancel()
        return False, None
    waiter.cancel()
    return True, next_request.result()


def ads_handler(
    cache: XdsCache, delta: DeltaCache | None = None, delta_order: Iterable[str] = ()
) -> grpc.GenericRpcHandler:
    async def stream_resources(
        requests: AsyncIterator[discovery_pb2.DiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        state = _Stream(peer=context.peer())
        inbox: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        pump_task = asyncio.create_task(_pump(requests, inbox))
        cache._attach(state)
        try:
            while True:
                changed = cache.changed()
                for response in _pending(cache, state):
                    yield response
                arrived, req = await _next_request(inbox, changed)
                if not arrived:
                    continue  # the configuration changed first: send what is pending
                if req is None:
                    return
                _receive(state, req)
                cache._progressed()
        finally:
            pump_task.cancel()
            cache._detach(state)

    methods = {
        "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            stream_resources,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=discovery_pb2.DiscoveryResponse.SerializeToString,
        )
    }
    if delta is not None:
        methods["DeltaAggregatedResources"] = delta_handler(delta, delta_order)
    return grpc.method_handlers_generic_handler(ADS_SERVICE, methods)


_RESOURCES_FIELD = bytes([(2 << 3) | 2])  # DeltaDiscoveryResponse.resources: field 2, length-delimited


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
    return Packed(name, _RESOURCES_FIELD + _varint(len(body)) + body)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


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


def _nonce() -> str:
    return str(next(_nonces))


def delta_handler(cache: DeltaCache, type_order: Iterable[str]) -> grpc.RpcMethodHandler:
    """`DeltaAggregatedResources` for wildcard subscribers of the delta types.

    A new subscription gets every live resource (in chunks), then only what changed.
    Types are served in `type_order`, so that referenced resources arrive first.
    """
    rank = {t: i for i, t in enumerate(type_order)}

    async def stream_resources(
        requests: AsyncIterator[discovery_pb2.DeltaDiscoveryRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        stream = _DeltaStream(context.peer())
        peer, sent = stream.peer, stream.sent  # sent: type URL -> the revision this stream has
        inbox: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = asyncio.Queue()
        pump_task = asyncio.create_task(_pump(requests, inbox))
        cache._attach(stream)
        try:
            while True:
                changed = cache.changed()
                for type_url in sorted(sent, key=lambda t: rank.get(t, len(rank))):
                    have = sent[type_url]
                    revision = cache.revision
                    if have == revision:
                        continue
                    if have is None:
                        change = TypeChanges(cache.live(type_url))
                    else:
                        change = cache.since(type_url, have)
                    sent[type_url] = revision
                    if have is not None and not change.resources and not change.removed:
                        continue
                    stream.unanswered[type_url] = nonce = _nonce()
                    for response in _chunks(type_url, change, revision, nonce):
                        yield response
                stream.settle()  # types with nothing new are as far as the revision
                arrived, req = await _next_request(inbox, changed)
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
            pump_task.cancel()
            cache._detach(stream)

    return grpc.stream_stream_rpc_method_handler(
        stream_resources,
        request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
        response_serializer=None,  # responses are serialized already (`_chunks`)
    )


def _receive(state: _Stream, req: discovery_pb2.DiscoveryRequest) -> None:
    sub = state.subscriptions.get(req.type_url)
    if sub is None:
        # A client reconnecting tells what it has: content-digest versions let us skip resending it.
        state.subscriptions[req.type_url] = _Subscription(sent_version=req.version_info or None)
        return
    if req.response_nonce and req.response_nonce != sub.nonce:
        return  # answers an older response; a newer one is on its way
    sub.awaiting_answer = False
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
        if sub.awaiting_answer or current is None:
            continue
        if current.version in (sub.sent_version, sub.rejected_version):
            continue
        sub.sent_version = current.version
        sub.awaiting_answer = True
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
