"""The ADS server at scale (issue 18): delta pushes proportional to the change, small responses,
incremental reads of the store, and an xDS connection that survives the client's keepalive pings."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import yaml
from envoy.service.discovery.v3 import discovery_pb2
from infery_proto.v1 import config_pb2
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

from control_plane.resources.bulk_keys import create_keys
from control_plane.store.changes import mutation
from control_plane.store.snapshot import load_changes
from control_plane.store.tables import ApiKey, Member, Model, Provider, Route, Workspace, utcnow
from control_plane.xds.envoy_cache import ROUTE, EnvoyCache
from control_plane.xds.envoy_config import ListenerSettings
from control_plane.xds.publisher import DELTA_TYPES, Publisher
from control_plane.xds.server import (
    MAX_DELTA_RESOURCES,
    MIN_CLIENT_PING_INTERVAL_MS,
    SERVER_OPTIONS,
    DeltaCache,
    TypeChanges,
    ads_handler,
    resource,
    server_options,
)

REPO = Path(__file__).resolve().parents[2]
KEY_TYPE = "type.googleapis.com/infery.v1.ApiKey"
DELTA = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"


def _tenant(session_factory: sessionmaker[Session]) -> tuple[str, str]:
    with mutation(session_factory) as session:
        workspace = Workspace(name="w")
        member = Member(workspace_id=workspace.id, email="a@b.c", role="member")
        session.add(workspace)
        session.flush()
        session.add(member)
    return workspace.id, member.id


def test_changes_are_read_since_a_revision_with_revocations_and_deletes(
    session_factory: sessionmaker[Session],
) -> None:
    workspace_id, member_id = _tenant(session_factory)
    created = create_keys(session_factory, workspace_id, member_id, 3)
    with session_factory() as session:
        full = load_changes(session, 0)
    assert sorted(k.id for k in full.api_keys) == sorted(key_id for key_id, _ in created)

    with mutation(session_factory) as session:
        key = session.get(ApiKey, created[0][0])
        assert key is not None
        key.revoked_at = utcnow()
    with mutation(session_factory) as session:
        session.add(Provider(name="p", kind="openai", base_url="https://x.example/v1"))
    with mutation(session_factory) as session:
        session.add(Model(slug="m", provider="p", upstream_model="m"))
    with mutation(session_factory) as session:
        session.delete(session.get(Model, "m"))
    with session_factory() as session:
        later = load_changes(session, full.revision)
    assert later.revision == full.revision + 4
    assert later.api_keys == () and later.removed["api_keys"] == (created[0][0],)
    assert [p.name for p in later.providers] == ["p"]
    assert later.models == () and later.removed["models"] == ("m",)  # created then deleted
    assert later.workspaces == ()  # unchanged rows are not read again
    with session_factory() as session:
        assert load_changes(session, later.revision).is_empty()


def test_a_cache_answers_since_a_version_with_only_what_changed() -> None:
    cache = DeltaCache()
    keys = [config_pb2.ApiKey(id=f"k{i}", key_hash=f"h{i}") for i in range(1000)]
    cache.apply(1, {KEY_TYPE: TypeChanges([resource(k.id, 1, k) for k in keys])})
    cache.apply(2, {KEY_TYPE: TypeChanges([resource("k5", 2, keys[5])], removed=["k7"])})
    cache.apply(3, {KEY_TYPE: TypeChanges(removed=["k8", "never-there"])})
    assert len(cache.live(KEY_TYPE)) == 998
    since_1 = cache.since(KEY_TYPE, 1)
    assert [r.name for r in since_1.resources] == ["k5"] and sorted(since_1.removed) == ["k7", "k8"]
    assert cache.since(KEY_TYPE, 3) == TypeChanges()


async def _serve(
    delta: DeltaCache, options: tuple[tuple[str, int], ...] = SERVER_OPTIONS
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((ads_handler(EnvoyCache(), delta, DELTA_TYPES),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def _subscribe(
    channel: grpc.aio.Channel, type_url: str
) -> tuple[grpc.aio.StreamStreamCall, AsyncIterator[discovery_pb2.DeltaDiscoveryResponse]]:
    call = channel.stream_stream(
        DELTA,
        request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
    )()
    await call.write(discovery_pb2.DeltaDiscoveryRequest(type_url=type_url))
    return call, call.__aiter__()


async def test_a_first_load_arrives_in_small_responses_then_only_changes() -> None:
    delta = DeltaCache()
    count = MAX_DELTA_RESOURCES * 5 + 7
    keys = [config_pb2.ApiKey(id=f"k{i}", key_hash="x" * 64, workspace_id="w") for i in range(count)]
    delta.apply(1, {KEY_TYPE: TypeChanges([resource(k.id, 1, k) for k in keys])})
    server, port = await _serve(delta)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call, responses = await _subscribe(channel, KEY_TYPE)
            received, chunks = 0, 0
            while True:
                response = await asyncio.wait_for(anext(responses), 5)
                assert len(response.resources) <= MAX_DELTA_RESOURCES
                received += len(response.resources)
                chunks += 1
                if response.system_version_info:  # the last response of the push
                    break
            assert (received, chunks, response.system_version_info) == (count, 6, "1")
            delta.apply(2, {KEY_TYPE: TypeChanges(removed=["k3"])})
            response = await asyncio.wait_for(anext(responses), 5)
            assert list(response.removed_resources) == ["k3"] and not response.resources
            call.cancel()
    finally:
        await server.stop(None)


async def _pinged_stream_survives(server_min_ping_ms: int, client_ping_ms: int) -> bool:
    """Whether an idle delta stream survives 4 s of client keepalive pings and still delivers."""
    delta = DeltaCache()
    server, port = await _serve(delta, server_options(server_min_ping_ms))
    client_options = [
        ("grpc.keepalive_time_ms", client_ping_ms),
        ("grpc.keepalive_timeout_ms", 5000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=client_options) as channel:
            call, responses = await _subscribe(channel, KEY_TYPE)
            assert (await asyncio.wait_for(anext(responses), 5)).system_version_info == "0"
            await asyncio.sleep(4)
            if call.done():
                return False
            delta.apply(1, {KEY_TYPE: TypeChanges([resource("k", 1, config_pb2.ApiKey(id="k"))])})
            try:
                later = await asyncio.wait_for(anext(responses), 5)
            except grpc.aio.AioRpcError:
                return False
            call.cancel()
            return [r.name for r in later.resources] == ["k"]
    finally:
        await server.stop(None)


async def test_keepalive_pings_as_often_as_the_policy_allows_keep_the_stream() -> None:
    """Envoy pings its xDS connection every 10 s; gRPC's default server policy (5 minutes)
    answered the third such ping with GOAWAY "too_many_pings" and reset the ADS stream. Scaled
    down (a 0.5 s policy, pings every second) so that the test takes seconds."""
    assert await _pinged_stream_survives(server_min_ping_ms=500, client_ping_ms=1000)
    # gRPC's default policy, which the control plane had: the stream is reset.
    assert not await _pinged_stream_survives(server_min_ping_ms=300_000, client_ping_ms=1000)


def test_envoys_xds_keepalive_is_within_the_control_planes_ping_policy() -> None:
    bootstrap = yaml.safe_load((REPO / "envoy" / "bootstrap.yaml").read_text())
    (xds,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "infery_xds"]
    options = xds["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    interval = options["explicit_http_config"]["http2_protocol_options"]["connection_keepalive"]["interval"]
    assert float(interval.removesuffix("s")) * 1000 >= MIN_CLIENT_PING_INTERVAL_MS
    assert dict(SERVER_OPTIONS)["grpc.http2.min_ping_interval_without_data_ms"] == MIN_CLIENT_PING_INTERVAL_MS


async def test_a_key_change_does_not_rebuild_envoy_resources(session_factory: sessionmaker[Session]) -> None:
    with mutation(session_factory) as session:
        session.add(Provider(name="p", kind="openai", base_url="https://x.example/v1"))
        session.flush()
        session.add(Model(slug="m", provider="p", upstream_model="m"))
        session.add(Model(slug="n", provider="p", upstream_model="n"))
        session.flush()
        session.add(
            Route(slug="m", fallbacks=["n"], retry_on=["5xx"], attempt_timeout_s=1, total_timeout_s=2)
        )
    workspace_id, member_id = _tenant(session_factory)
    cache = EnvoyCache()
    publisher = Publisher(cache, session_factory, ListenerSettings())
    await publisher.publish()
    routes = cache.get(ROUTE)
    assert routes
    create_keys(session_factory, workspace_id, member_id, 2)
    await publisher.publish()
    assert cache.get(ROUTE) is routes  # untouched: not rebuilt, not re-sent
    assert len(publisher.delta.live(KEY_TYPE)) == 2


def test_the_delta_cache_leaves_the_garbage_collector_nothing_to_walk() -> None:
    """The control plane keeps every key it pushes. An object per key (a dataclass) was in every
    full collection of its event loop: ~15-20 ms pauses at 10^5 keys, in the middle of pushes.
    Dicts of strings, ints and bytes are never tracked."""
    count = 100_000
    delta = DeltaCache()
    wires = [resource(f"k{i}", 1, config_pb2.ApiKey(id=f"k{i}", key_hash=f"{i:064x}")) for i in range(count)]

    def walked() -> int:
        gc.collect(1)
        return sum(len(gc.get_referents(o)) for o in gc.get_objects())

    gc.collect()
    gc.freeze()
    try:
        before = walked()
        delta.apply(1, {KEY_TYPE: TypeChanges(wires)})
        delta.apply(2, {KEY_TYPE: TypeChanges(removed=[f"k{i}" for i in range(0, count, 2)])})
        del wires
        per_key = (walked() - before) / count
    finally:
        gc.unfreeze()
    assert per_key < 0.01, f"a collection walks {per_key:.2f} references per key"
    assert len(delta.live(KEY_TYPE)) == count // 2
    assert len(delta.since(KEY_TYPE, 1).removed) == count // 2
