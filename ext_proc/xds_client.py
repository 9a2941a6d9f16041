"""Subscribes to the control plane's ADS endpoint for the gateway's own resources.

State of the world: each response carries every resource of its type. The
client ACKs what it applied and NACKs what it could not decode; on any
connection failure it reconnects quickly and keeps serving the last good
configuration meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2
from infery_proto.v1 import config_pb2

from ext_proc import config as gateway_config
from ext_proc.control_plane_channel import open_channel

log = logging.getLogger("infery.ext_proc.xds")

ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
TYPE_PREFIX = "type.googleapis.com/infery.v1."
RESOURCE_TYPES: dict[str, Any] = {
    TYPE_PREFIX + "Provider": config_pb2.Provider,
    TYPE_PREFIX + "Model": config_pb2.Model,
    TYPE_PREFIX + "Workspace": config_pb2.Workspace,
    TYPE_PREFIX + "ApiKey": config_pb2.ApiKey,
    TYPE_PREFIX + "Route": config_pb2.Route,
}


class ConfigSubscriber:
    """Keeps :attr:`current` up to date with the control plane."""

    def __init__(
        self,
        target: str,
        node_id: str,
        on_update: Callable[[], None] | None = None,
        metadata: tuple[tuple[str, str], ...] = (),
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self._target = target
        self._metadata = metadata
        self._credentials = credentials
        self._node = base_pb2.Node(id=node_id, cluster="infery-ext-proc")
        self._resources: dict[str, list[Any]] = {}
        self._versions: dict[str, str] = {}
        self._on_update = on_update
        self.current: gateway_config.GatewayConfig | None = None
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="xds-subscriber")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                async with open_channel(self._target, self._credentials) as channel:
                    call = channel.stream_stream(
                        ADS_METHOD,
                        request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                        response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
                    )
                    await self._stream(call)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                log.warning("xDS stream to %s ended: %s", self._target, exc.code().name)
            except Exception:
                log.exception("xDS stream to %s failed", self._target)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _stream(self, call: Any) -> None:
        outbox: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        for i, type_url in enumerate(RESOURCE_TYPES):
            req = discovery_pb2.DiscoveryRequest(type_url=type_url)
            if i == 0:
                req.node.CopyFrom(self._node)
            outbox.put_nowait(req)

        async def requests() -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
            while True:
                yield await outbox.get()

        async for response in call(requests(), metadata=self._metadata):
            outbox.put_nowait(self._apply(response))

    def _apply(self, response: discovery_pb2.DiscoveryResponse) -> discovery_pb2.DiscoveryRequest:
        type_url = response.type_url
        reply = discovery_pb2.DiscoveryRequest(type_url=type_url, response_nonce=response.nonce)
        cls = RESOURCE_TYPES.get(type_url)
        try:
            if cls is None:
                raise ValueError(f"unknown resource type {type_url}")
            decoded = []
            for any_ in response.resources:
                item = cls()
                if not any_.Unpack(item):
                    raise ValueError(f"resource of type {any_.type_url} in a {type_url} response")
                decoded.append(item)
            # Applied only if it builds: a rejected update must not poison later ones.
            candidate = {**self._resources, type_url: decoded}
            if len(candidate) == len(RESOURCE_TYPES):
                self._rebuild(candidate)
            self._resources = candidate
        except Exception as exc:
            log.error("rejecting %s version %s: %s", type_url, response.version_info, exc)
            reply.version_info = self._versions.get(type_url, "")
            reply.error_detail.CopyFrom(status_pb2.Status(code=3, message=str(exc)))
            return reply
        self._versions[type_url] = response.version_info
        reply.version_info = response.version_info
        return reply

    def _rebuild(self, resources: dict[str, list[Any]]) -> None:
        t = TYPE_PREFIX
        self.current = gateway_config.build(
            resources[t + "Provider"],
            resources[t + "Model"],
            resources[t + "Workspace"],
            resources[t + "ApiKey"],
            resources[t + "Route"],
        )
        self.ready.set()
        if self._on_update:
            self._on_update()
