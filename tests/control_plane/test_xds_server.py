"""The state-of-the-world ADS handler Envoy subscribes to (clusters, listeners, routes).

Envoy applies one type's responses one after the other, and at 1,000 chains one CDS update
costs it 20-150 ms: the server keeps at most one response per type unanswered, so that
Envoy, once done, gets the newest version rather than every version made meanwhile.
"""

from __future__ import annotations

import asyncio

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2

from control_plane.xds.server import CLUSTER, SERVER_OPTIONS, XdsCache, ads_handler

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


def _clusters(*names: str) -> list[cluster_pb2.Cluster]:
    return [cluster_pb2.Cluster(name=name) for name in names]


def _names(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    out = []
    for packed in response.resources:
        cluster = cluster_pb2.Cluster()
        packed.Unpack(cluster)
        out.append(cluster.name)
    return out


async def test_a_new_version_waits_for_the_answer_to_the_last_and_skips_to_the_newest() -> None:
    cache = XdsCache()
    cache.set(CLUSTER, _clusters("a"))
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((ads_handler(cache),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.stream_stream(
                ADS,
                request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
            )()
            await call.write(discovery_pb2.DiscoveryRequest(type_url=CLUSTER))
            first = await asyncio.wait_for(call.read(), 5)
            assert _names(first) == ["a"]

            # Envoy is busy applying the first response: two versions are made meanwhile.
            cache.set(CLUSTER, _clusters("a", "b"))
            cache.set(CLUSTER, _clusters("a", "b", "c"))
            early = asyncio.ensure_future(call.read())
            await asyncio.sleep(0.5)
            assert not early.done(), "a version was sent before the last one was answered"

            ack = discovery_pb2.DiscoveryRequest(
                type_url=CLUSTER, version_info=first.version_info, response_nonce=first.nonce
            )
            await call.write(ack)
            newest = await asyncio.wait_for(early, 5)
            assert _names(newest) == ["a", "b", "c"]  # straight to the newest; ("a", "b") never sent

            # A refusal (NACK) is an answer too: the next version follows it.
            nack = discovery_pb2.DiscoveryRequest(type_url=CLUSTER, response_nonce=newest.nonce)
            nack.error_detail.message = "refused"
            await call.write(nack)
            cache.set(CLUSTER, _clusters("d"))
            assert _names(await asyncio.wait_for(call.read(), 5)) == ["d"]
            call.cancel()
    finally:
        await server.stop(None)
