"""Envoy's delta xDS (clusters, listeners, routes), spoken as Envoy speaks it over a real gRPC stream.

Each resource is sent only when its content changed; a removal is `removed_resources`; a
reconnecting Envoy names what it has and gets only what differs. Envoy applies one type's
responses one after the other, and at 1,000 chains an update costs it tens of ms: at most
one response per type is unanswered, so that Envoy, once done, gets the newest versions
rather than every version made meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message

from control_plane.xds.envoy_cache import CLUSTER, ROUTE, EnvoyCache, envoy_resource
from control_plane.xds.server import SERVER_OPTIONS, ads_handler

DELTA = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"


def _clusters(**timeouts: int) -> dict[str, Any]:
    """Clusters by name; a different connect timeout is a different content (a new version)."""
    return {
        name: envoy_resource(cluster_pb2.Cluster(name=name, connect_timeout={"seconds": s}))
        for name, s in timeouts.items()
    }


def _install(cache: EnvoyCache, type_url: str, messages: list[Message]) -> set[str]:
    return cache.install(type_url, {m.name: envoy_resource(m) for m in messages})  # type: ignore[attr-defined]


class Envoy:
    """A delta subscriber as Envoy is: wildcard for clusters, by name for routes."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.call: Any = channel.stream_stream(
            DELTA,
            request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
        )()

    async def subscribe(
        self, type_url: str, names: tuple[str, ...] = (), have: dict[str, str] | None = None
    ) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url, resource_names_subscribe=names, initial_resource_versions=have or {}
        )
        await self.call.write(req)

        self._reading: asyncio.Future[Any] | None = None

    async def receive(self) -> discovery_pb2.DeltaDiscoveryResponse:
        reading, self._reading = self._reading or asyncio.ensure_future(self.call.read()), None
        return await asyncio.wait_for(reading, 5)

    async def nothing_arrives(self, seconds: float = 0.3) -> None:
        """Nothing is sent for ``seconds`` (the read goes on: cancelling it would end the call)."""
        self._reading = self._reading or asyncio.ensure_future(self.call.read())
        await asyncio.sleep(seconds)
        assert not self._reading.done(), f"unexpected response: {self._reading.result()}"

    async def answer(self, response: discovery_pb2.DeltaDiscoveryResponse, refuse: bool = False) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(type_url=response.type_url, response_nonce=response.nonce)
        if refuse:
            req.error_detail.message = "refused"
        await self.call.write(req)


def _sent(response: discovery_pb2.DeltaDiscoveryResponse) -> dict[str, str]:
    return {r.name: r.version for r in response.resources}


@asynccontextmanager
async def _serving(cache: EnvoyCache) -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((ads_handler(cache),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        await server.stop(None)


async def test_a_subscriber_gets_every_cluster_then_only_the_one_that_changed() -> None:
    cache = EnvoyCache()
    cache.install(CLUSTER, _clusters(a=1, b=1, c=1))
    async with _serving(cache) as channel:
        envoy = Envoy(channel)
        await envoy.subscribe(CLUSTER)
        first = await envoy.receive()
        assert sorted(_sent(first)) == ["a", "b", "c"] and not first.removed_resources
        await envoy.answer(first)

        assert cache.install(CLUSTER, _clusters(a=1, b=2, c=1)) == {"b"}
        changed = await envoy.receive()
        assert _sent(changed) == {"b": cache.get(CLUSTER)["b"].version}  # one resource, the changed one
        assert len(changed.resources) == 1 and not changed.removed_resources
        await envoy.answer(changed)

        assert cache.install(CLUSTER, _clusters(a=1, b=2, c=1)) == set()  # same content: nothing
        await envoy.nothing_arrives()
        envoy.call.cancel()


async def test_a_removed_cluster_is_sent_as_a_removal_alone() -> None:
    cache = EnvoyCache()
    cache.install(CLUSTER, _clusters(a=1, b=1))
    async with _serving(cache) as channel:
        envoy = Envoy(channel)
        await envoy.subscribe(CLUSTER)
        await envoy.answer(await envoy.receive())
        assert cache.install(CLUSTER, _clusters(a=1)) == {"b"}
        removal = await envoy.receive()
        assert list(removal.removed_resources) == ["b"] and not removal.resources
        envoy.call.cancel()


async def test_a_new_version_waits_for_the_answer_to_the_last_and_skips_to_the_newest() -> None:
    cache = EnvoyCache()
    cache.install(CLUSTER, _clusters(a=1))
    async with _serving(cache) as channel:
        envoy = Envoy(channel)
        await envoy.subscribe(CLUSTER)
        first = await envoy.receive()

        # Envoy is busy applying the first response: b is added, changed, and a removed meanwhile.
        cache.install(CLUSTER, _clusters(a=1, b=1))
        cache.install(CLUSTER, _clusters(b=2))
        await envoy.nothing_arrives(0.5)  # nothing sent before the last one was answered

        await envoy.answer(first)
        newest = await envoy.receive()
        assert _sent(newest) == {"b": cache.get(CLUSTER)["b"].version}  # b=1 was never sent
        assert list(newest.removed_resources) == ["a"]
        envoy.call.cancel()


async def test_a_refusal_is_an_answer_and_the_refused_version_is_not_sent_again() -> None:
    cache = EnvoyCache()
    cache.install(CLUSTER, _clusters(a=1, b=1))
    async with _serving(cache) as channel:
        envoy = Envoy(channel)
        await envoy.subscribe(CLUSTER)
        await envoy.answer(await envoy.receive())
        cache.install(CLUSTER, _clusters(a=2, b=1))
        refused = await envoy.receive()
        waiting = asyncio.create_task(cache.answered({CLUSTER: ["a"]}, timeout_s=30))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await envoy.answer(refused, refuse=True)
        assert await asyncio.wait_for(waiting, 5) == []  # NACK: answered, nobody silent

        cache.install(CLUSTER, _clusters(a=2, b=2))  # the next change: only b, not the refused a again
        assert sorted(_sent(await envoy.receive())) == ["b"]
        envoy.call.cancel()


async def test_a_reconnecting_envoy_gets_only_what_differs_from_the_versions_it_has() -> None:
    cache = EnvoyCache()
    cache.install(CLUSTER, _clusters(a=1, b=2, c=1))
    current = {name: item.version for name, item in cache.get(CLUSTER).items()}
    stale_b = _clusters(b=1)["b"].version
    async with _serving(cache) as channel:
        envoy = Envoy(channel)
        await envoy.subscribe(CLUSTER, have={"a": current["a"], "b": stale_b, "gone": "0123"})
        update = await envoy.receive()
        assert _sent(update) == {"b": current["b"], "c": current["c"]}  # a is as it has it
        assert list(update.removed_resources) == ["gone"]
        await envoy.answer(update)

        up_to_date = Envoy(channel)  # has everything: nothing to send
        await up_to_date.subscribe(CLUSTER, have=current)
        await up_to_date.nothing_arrives()

        new = Envoy(channel)  # a new (or restarted) Envoy has nothing: everything
        await new.subscribe(CLUSTER)
        assert _sent(await new.receive()) == current
        for e in (envoy, up_to_date, new):
            e.call.cancel()


async def test_routes_go_by_name_to_an_envoy_that_subscribed_to_them() -> None:
    cache = EnvoyCache()
    _install(
        cache,
        ROUTE,
        [route_pb2.RouteConfiguration(name="infery_routes"), route_pb2.RouteConfiguration(name="other")],
    )
    async with _serving(cache) as channel:
        envoy = Envoy(channel)
        await envoy.subscribe(ROUTE, names=("infery_routes",))
        routes = await envoy.receive()
        assert list(_sent(routes)) == ["infery_routes"]
        config = route_pb2.RouteConfiguration()
        routes.resources[0].resource.Unpack(config)
        assert config.name == "infery_routes"
        await envoy.answer(routes)
        # A change to a configuration it did not subscribe to is not its business.
        _install(
            cache,
            ROUTE,
            [
                route_pb2.RouteConfiguration(name="infery_routes"),
                route_pb2.RouteConfiguration(name="other", virtual_hosts=[{"name": "v"}]),
            ],
        )
        await envoy.nothing_arrives()
        envoy.call.cancel()


async def test_answered_waits_for_each_connected_envoy_per_resource() -> None:
    cache = EnvoyCache()
    cache.install(CLUSTER, _clusters(a=1))
    async with _serving(cache) as channel:
        envoys = [Envoy(channel), Envoy(channel)]
        for envoy in envoys:
            await envoy.subscribe(CLUSTER)
            await envoy.answer(await envoy.receive())
        changed = cache.install(CLUSTER, _clusters(a=1, b=1))
        updates = [await envoy.receive() for envoy in envoys]
        assert len(await cache.answered({CLUSTER: changed}, timeout_s=0.2)) == 2  # both silent so far
        await envoys[0].answer(updates[0])
        assert len(await cache.answered({CLUSTER: changed}, timeout_s=0.2)) == 1
        # What did not change needs no answer: a is answered by both long ago.
        assert await cache.answered({CLUSTER: ["a"]}, timeout_s=0.2) == []
        await envoys[1].answer(updates[1])
        assert await cache.answered({CLUSTER: changed}, timeout_s=5) == []
        for envoy in envoys:
            envoy.call.cancel()


async def test_an_envoy_with_nothing_gets_a_first_response_even_when_there_is_nothing() -> None:
    """Envoy finishes starting only once each subscription had a response: without one (no
    cluster configured yet) it waited its 15 s initial fetch timeout."""
    cache = EnvoyCache()
    cache.install(CLUSTER, {})
    async with _serving(cache) as channel:
        envoy = Envoy(channel)
        await envoy.subscribe(CLUSTER)
        empty = await envoy.receive()
        assert empty.type_url == CLUSTER and not empty.resources and not empty.removed_resources
        await envoy.answer(empty)
        await envoy.nothing_arrives()  # owed once only
        envoy.call.cancel()


def test_the_same_configuration_has_the_same_versions_in_every_process(tmp_path: Path) -> None:
    """Versions are digests of content: a restarted control plane (another process, another
    hash seed for json_format's nested maps) must find what a reconnecting Envoy has."""
    script = tmp_path / "versions.py"
    script.write_text(
        "from infery_proto.v1 import config_pb2\n"
        "from control_plane.xds.envoy_config import ListenerSettings\n"
        "from control_plane.xds.publisher import EnvoyResources\n"
        "p = [config_pb2.Provider(name='p', kind='openai', base_url='https://x.example/v1')]\n"
        "m = [config_pb2.Model(slug=s, provider='p', upstream_model=s) for s in 'abc']\n"
        "r = [config_pb2.Route(slug='a', fallbacks=['b', 'c'], retry_on=['5xx'], cluster='route_a')]\n"
        "e = EnvoyResources(ListenerSettings(access_log='stdout'))\n"
        "for t, items in sorted(e.prepare(e.build(p, m, r)).items()):\n"
        "    print(t, sorted((n, i.version) for n, i in items.items()))\n"
    )
    runs = {
        subprocess.run(
            [sys.executable, str(script)],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in (1, 2, 3)
    }
    assert len(runs) == 1, runs
