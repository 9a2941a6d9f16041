"""The order of a change across Envoy and ext_proc, both delta xDS, resource by resource.

ext_proc names the cluster of each request; Envoy must have it. A new chain's Route reaches
ext_proc only after every connected Envoy answered (ACK or NACK) the cluster that carries
it; a removed chain's cluster stays in Envoy until every ext_proc has applied the removal
and the drain period has passed (control_plane/xds/publisher.py). The route configuration
never changes with a chain: every chain's requests take the one chain route. Real gRPC streams
on the real ADS server; the clients speak the protocol as Envoy and ext_proc do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, select

from control_plane.store.changes import mutation
from control_plane.store.tables import Model, Provider, Route
from control_plane.xds.envoy_cache import CLUSTER, ROUTE, EnvoyCache
from control_plane.xds.envoy_config import ROUTE_CONFIG_NAME, ListenerSettings
from control_plane.xds.publisher import DELTA_TYPES, Publisher
from control_plane.xds.server import SERVER_OPTIONS, ads_handler

DELTA = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
ROUTE_TYPE = "type.googleapis.com/infery.v1.Route"
CHAIN = "route_a"


def _setup(session_factory: sessionmaker[Session]) -> None:
    with mutation(session_factory) as session:
        session.add(Provider(name="p", kind="openai", base_url="https://x.example/v1"))
        session.flush()
        for slug in ("a", "b"):
            session.add(Model(slug=slug, provider="p", upstream_model=slug))


def _chain(session_factory: sessionmaker[Session]) -> None:
    with mutation(session_factory) as session:
        session.add(
            Route(slug="a", fallbacks=["b"], retry_on=["5xx"], attempt_timeout_s=1, total_timeout_s=2)
        )


def _unchain(session_factory: sessionmaker[Session]) -> None:
    with mutation(session_factory) as session:
        session.delete(session.exec(select(Route).where(Route.slug == "a")).one())


class Envoy:
    """A delta subscriber as Envoy is (clusters by wildcard, the route configuration by name)
    that answers when told to."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.call: Any = channel.stream_stream(
            DELTA,
            request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
        )()
        self.last: dict[str, discovery_pb2.DeltaDiscoveryResponse] = {}
        self.versions: dict[str, dict[str, str]] = {CLUSTER: {}, ROUTE: {}}  # what it has: name -> version

    async def subscribe(self) -> None:
        for type_url, names in ((CLUSTER, []), (ROUTE, [ROUTE_CONFIG_NAME])):
            req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=names)
            await self.call.write(req)
            await self.receive()
            await self.answer(type_url)

    async def receive(self) -> discovery_pb2.DeltaDiscoveryResponse:
        response = await asyncio.wait_for(self.call.read(), 5)
        self.last[response.type_url] = response
        have = self.versions[response.type_url]
        have.update((r.name, r.version) for r in response.resources)
        for name in response.removed_resources:
            have.pop(name, None)
        return response

    async def answer(self, type_url: str, refuse: bool = False) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=self.last[type_url].nonce)
        if refuse:
            req.error_detail.message = "refused"
        await self.call.write(req)

    def clusters(self) -> set[str]:
        return set(self.versions[CLUSTER])


class ExtProc:
    """A delta subscriber to ext_proc's types that answers (has applied) a response when told to."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.call: Any = channel.stream_stream(
            DELTA,
            request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
        )()
        self.routes: set[str] = set()

    async def subscribe(self) -> None:
        for type_url in DELTA_TYPES:
            await self.call.write(discovery_pb2.DeltaDiscoveryRequest(type_url=type_url))
        for _ in DELTA_TYPES:
            await self.answer(await self.receive())

    async def receive(self) -> discovery_pb2.DeltaDiscoveryResponse:
        response = await asyncio.wait_for(self.call.read(), 5)
        if response.type_url == ROUTE_TYPE:
            self.routes |= {r.name for r in response.resources}
            self.routes -= set(response.removed_resources)
        return response

    async def answer(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        reply = discovery_pb2.DeltaDiscoveryRequest(type_url=response.type_url, response_nonce=response.nonce)
        await self.call.write(reply)


@asynccontextmanager
async def _server(publisher: Publisher, cache: EnvoyCache) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((ads_handler(cache, publisher.delta, DELTA_TYPES),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


async def test_a_new_chain_reaches_ext_proc_only_once_every_envoy_has_answered_its_cluster(
    session_factory: sessionmaker[Session],
) -> None:
    _setup(session_factory)
    cache = EnvoyCache()
    publisher = Publisher(cache, session_factory, ListenerSettings(), ack_timeout_s=30)
    await publisher.publish()
    async with _server(publisher, cache) as channel:
        envoys = [Envoy(channel), Envoy(channel)]
        for envoy in envoys:
            await envoy.subscribe()
        ext_proc = ExtProc(channel)
        await ext_proc.subscribe()

        _chain(session_factory)
        publishing = asyncio.create_task(publisher.publish())
        for envoy in envoys:  # both are sent the chain's cluster first
            assert (await envoy.receive()).type_url == CLUSTER
            assert CHAIN in envoy.clusters()
        pushed = asyncio.ensure_future(ext_proc.receive())
        await envoys[0].answer(CLUSTER)
        await asyncio.sleep(0.3)
        assert not pushed.done(), "ext_proc was sent the chain before every Envoy answered its cluster"
        assert not publishing.done()
        await envoys[1].answer(CLUSTER, refuse=True)  # a refusal is an answer (logged as an error)
        await asyncio.wait_for(publishing, 5)
        while "a" not in ext_proc.routes:
            await ext_proc.answer(await pushed)
            pushed = asyncio.ensure_future(ext_proc.receive())
        pushed.cancel()


async def test_an_envoy_that_never_answers_delays_ext_proc_by_the_timeout_only(
    session_factory: sessionmaker[Session],
) -> None:
    _setup(session_factory)
    cache = EnvoyCache()
    publisher = Publisher(cache, session_factory, ListenerSettings(), ack_timeout_s=0.5)
    await publisher.publish()
    async with _server(publisher, cache) as channel:
        silent = Envoy(channel)
        await silent.subscribe()
        _chain(session_factory)
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(publisher.publish(), 5)
        assert 0.4 < asyncio.get_running_loop().time() - started < 3
        assert [r.name for r in publisher.delta.live(ROUTE_TYPE)] == ["a"]


async def test_a_removed_chain_keeps_its_cluster_until_ext_proc_applied_the_removal_and_the_drain_passed(
    session_factory: sessionmaker[Session],
) -> None:
    _setup(session_factory)
    _chain(session_factory)
    cache = EnvoyCache()
    publisher = Publisher(cache, session_factory, ListenerSettings(), ack_timeout_s=30, retire_after_s=0.3)
    await publisher.publish()
    async with _server(publisher, cache) as channel:
        envoy = Envoy(channel)
        await envoy.subscribe()
        assert CHAIN in envoy.clusters()
        ext_proc = ExtProc(channel)
        await ext_proc.subscribe()
        assert ext_proc.routes == {"a"}
        routes = dict(envoy.versions[ROUTE])

        _unchain(session_factory)
        versions = {t: cache.get(t) for t in (CLUSTER, ROUTE)}
        await asyncio.wait_for(publisher.publish(), 5)
        # Envoy keeps the chain's cluster (retiring): nothing new for it.
        assert {t: cache.get(t) for t in (CLUSTER, ROUTE)} == versions
        removal = await ext_proc.receive()
        assert ext_proc.routes == set()

        # ext_proc has not answered (applied) the removal: however long, the cluster stays.
        await asyncio.sleep(0.5)
        await publisher.publish()
        assert {t: cache.get(t) for t in (CLUSTER, ROUTE)} == versions
        # Applied, and the drain period passed: the next publish (the revision poll's) drops it.
        await ext_proc.answer(removal)
        await asyncio.sleep(0.4)
        publishing = asyncio.create_task(publisher.publish())
        removal = await envoy.receive()
        assert list(removal.removed_resources) == [CHAIN] and not removal.resources  # the removal alone
        assert CHAIN not in envoy.clusters()
        await envoy.answer(CLUSTER)
        await asyncio.wait_for(publishing, 5)
        assert envoy.versions[ROUTE] == routes  # the route configuration: never re-sent


async def test_a_change_to_one_chain_sends_envoy_its_cluster_only(
    session_factory: sessionmaker[Session],
) -> None:
    """Among many chains, creating one sends Envoy that chain's cluster alone (one resource, in
    one response); changing its retries and timeouts sends Envoy nothing (ext_proc sends them
    with each request); deleting it, the removal of its cluster alone. The route configuration
    is never re-sent: Envoy does not rebuild it for a chain."""
    _setup(session_factory)
    with mutation(session_factory) as session:
        for i in range(30):
            session.add(Model(slug=f"other-{i}", provider="p", upstream_model="a"))
        session.flush()
        for i in range(30):
            session.add(
                Route(
                    slug=f"other-{i}",
                    fallbacks=["b"],
                    retry_on=["5xx"],
                    attempt_timeout_s=1,
                    total_timeout_s=2,
                )
            )
    cache = EnvoyCache()
    publisher = Publisher(cache, session_factory, ListenerSettings(), ack_timeout_s=30, retire_after_s=0)
    await publisher.publish()
    async with _server(publisher, cache) as channel:
        envoy = Envoy(channel)
        await envoy.subscribe()
        assert len(envoy.clusters()) == 31  # the provider's and 30 chains' ("a" has none yet)
        routes = dict(envoy.versions[ROUTE])
        ext_proc = ExtProc(channel)
        await ext_proc.subscribe()

        _chain(session_factory)  # created
        publishing = asyncio.create_task(publisher.publish())
        clusters = await envoy.receive()
        assert [r.name for r in clusters.resources] == [CHAIN] and not clusters.removed_resources
        await envoy.answer(CLUSTER)
        await asyncio.wait_for(publishing, 5)
        await ext_proc.answer(await ext_proc.receive())
        assert "a" in ext_proc.routes

        with mutation(session_factory) as session:  # changed: its retries and timeouts
            route = session.exec(select(Route).where(Route.slug == "a")).one()
            route.total_timeout_s, route.retry_on = 9, ["5xx", "429"]
        await asyncio.wait_for(publisher.publish(), 5)
        await ext_proc.answer(await ext_proc.receive())  # ext_proc has the chain's new values

        _unchain(session_factory)  # deleted: its cluster retires once ext_proc applied it
        await asyncio.wait_for(publisher.publish(), 5)
        await ext_proc.answer(await ext_proc.receive())
        assert "a" not in ext_proc.routes
        while publisher.delta.applied_everywhere() < publisher.revision:  # the answer, on the server
            await asyncio.sleep(0.01)
        publishing = asyncio.create_task(publisher.publish())
        removal = await envoy.receive()
        assert list(removal.removed_resources) == [CHAIN] and not removal.resources
        await envoy.answer(CLUSTER)
        await asyncio.wait_for(publishing, 5)

        with contextlib.suppress(TimeoutError):  # nothing else came: no route configuration
            extra = await asyncio.wait_for(envoy.call.read(), 0.5)
            raise AssertionError(f"Envoy was sent {extra.type_url} {[r.name for r in extra.resources]}")
        assert envoy.versions[ROUTE] == routes
        assert envoy.versions[CLUSTER] == {name: item.version for name, item in cache.get(CLUSTER).items()}
