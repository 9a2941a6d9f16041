"""Subscribes to the control plane's delta ADS endpoint for the gateway's own resources.

Delta xDS (`DeltaAggregatedResources`): every key, model, workspace... is a resource
of its own, so a change costs work proportional to the change. The control plane
sends a push in small responses (`control_plane/xds/server.py`); only the last one
of a push carries `system_version_info`. Each response is applied on the event loop
between requests, one at a time (a few milliseconds at most), never as one long
rebuild.

A new connection starts a fresh configuration (`ConfigState`) that replaces the one
in force only once every type has arrived whole: until then the previous one keeps
serving (it cannot tell which resources were removed while disconnected otherwise).
Readiness is observable: `is_ready()` is true once a whole configuration is in force
and no configuration has since failed to arrive (a message over the size limit, a
resource that cannot be decoded); each such failure is logged as an error every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2
from infery_proto.v1 import config_pb2

from ext_proc import config as gateway_config
from ext_proc.control_plane_channel import open_channel
from ext_proc.loop_watch import cpu_wait_clock

log = logging.getLogger("infery.ext_proc.xds")

DELTA_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
TYPE_PREFIX = "type.googleapis.com/infery.v1."
RESOURCE_TYPES: dict[str, Any] = {
    TYPE_PREFIX + "Provider": config_pb2.Provider,
    TYPE_PREFIX + "Model": config_pb2.Model,
    TYPE_PREFIX + "Workspace": config_pb2.Workspace,
    TYPE_PREFIX + "Route": config_pb2.Route,
    TYPE_PREFIX + "ApiKey": config_pb2.ApiKey,
    # ext_proc's only: the control plane serves it on the delta endpoint Envoy never uses.
    TYPE_PREFIX + "DataPlaneSecret": config_pb2.DataPlaneSecret,
}
# The control plane's responses are at most ~1 MiB by construction (500 resources); only
# a single resource larger than that (a workspace listing thousands of models) exceeds
# it. 64 MiB leaves room for such a resource; anything larger fails loudly, see below.
MAX_RECEIVE_BYTES = 64 * 1024 * 1024
SLOW_APPLY_MS = 10.0  # the longest a request may wait for a configuration change
# Errors that say the control plane is unreachable, not that the configuration cannot arrive.
_CONNECTIVITY = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


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
        self._on_update = on_update
        self._live: gateway_config.ConfigState | None = None
        self._staging: gateway_config.ConfigState | None = gateway_config.ConfigState()
        self._complete: set[str] = set()
        self.current: gateway_config.GatewayConfig | None = None
        self._stream_problem = "no configuration yet"
        self._refused: dict[tuple[str, str], str] = {}  # (type URL, name) -> why it was refused
        self.ready = asyncio.Event()  # set once a whole configuration is in force (see also is_ready)
        self._task: asyncio.Task[None] | None = None
        # A replaced configuration's keys, dropped one shard per loop iteration (_release).
        self._retired: list[dict[str, str]] = []
        self._release_task: asyncio.Task[None] | None = None

    def is_ready(self) -> bool:
        """A whole configuration is in force and no part of it has failed to arrive since."""
        return self.current is not None and not self.problem

    @property
    def problem(self) -> str:
        """Why the configuration in force may be incomplete or stale ("" when it is not)."""
        if self._stream_problem:
            return self._stream_problem
        for (type_url, name), why in self._refused.items():
            return f"{type_url.removeprefix(TYPE_PREFIX)} {name!r} refused: {why}"
        return ""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="xds-subscriber")

    async def close(self) -> None:
        for task in (self._task, self._release_task):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                options = [("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)]
                async with open_channel(self._target, self._credentials, options) as channel:
                    call = channel.stream_stream(
                        DELTA_METHOD,
                        request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
                        response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
                    )
                    await self._stream(call)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _CONNECTIVITY:
                    log.warning("xDS stream to %s ended: %s", self._target, exc.code().name)
                else:
                    self._stream_problem = f"{exc.code().name}: {exc.details()}"
                    log.error("configuration from %s cannot arrive: %s", self._target, self.problem)
            except Exception:
                log.exception("xDS stream to %s failed", self._target)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    def _begin(self) -> None:
        """A new connection: a whole configuration again, in force once it has all arrived."""
        self._staging = gateway_config.ConfigState()
        self._complete = set()
        self._refused = {}

    async def _stream(self, call: Any) -> None:
        self._begin()
        outbox: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest] = asyncio.Queue()
        for i, type_url in enumerate(RESOURCE_TYPES):
            req = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url)
            if i == 0:
                req.node.CopyFrom(self._node)
            outbox.put_nowait(req)

        async def requests() -> AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]:
            while True:
                yield await outbox.get()

        waited = cpu_wait_clock()
        async for response in call(requests(), metadata=self._metadata):
            # System-call clocks outside the wall-clock window (a thread switch happens on their return).
            wait_started, cpu_started, started = waited(), time.thread_time(), time.perf_counter()
            outbox.put_nowait(self._apply(response))
            took_ms = (time.perf_counter() - started) * 1000
            if took_ms > SLOW_APPLY_MS:  # requests waited that long: say so (CPU: our own share)
                count, type_url = len(response.resources), response.type_url
                cpu_ms = (time.thread_time() - cpu_started) * 1000
                wait_ms = (waited() - wait_started) * 1000
                log.warning(
                    "applying %d %s took %.1f ms (%.1f ms CPU, %.1f ms waiting for a CPU)",
                    *(count, type_url, took_ms, cpu_ms, wait_ms),
                )
            await asyncio.sleep(0)  # requests run between two responses

    def _apply(self, response: discovery_pb2.DeltaDiscoveryResponse) -> discovery_pb2.DeltaDiscoveryRequest:
        type_url = response.type_url
        reply = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=response.nonce)
        state = self._staging if self._staging is not None else self._live
        assert state is not None
        errors: dict[str, str] = {}
        cls = RESOURCE_TYPES.get(type_url)
        if cls is None:
            errors[type_url] = "unknown resource type"
        else:
            decoded = []
            parse = cls.FromString
            for item in response.resources:
                packed = item.resource
                if packed.type_url == type_url:
                    decoded.append(parse(packed.value))
                else:
                    errors[item.name] = f"a {packed.type_url} in a {type_url} response"
            if self._refused:  # a new version, or a removal, settles an earlier refusal
                for name in (*(item.name for item in response.resources), *response.removed_resources):
                    self._refused.pop((type_url, name), None)
            kind = type_url.removeprefix(TYPE_PREFIX)
            errors.update(state.apply(kind, decoded, response.removed_resources))
        if errors:
            self._refused.update(((type_url, name), why) for name, why in errors.items())
            message = "; ".join(f"{name}: {why}" for name, why in errors.items())[:1000]
            log.error("refused part of %s: %s", type_url, message)
            reply.error_detail.CopyFrom(status_pb2.Status(code=3, message=message))
        if response.system_version_info:
            self._complete.add(type_url)
        if state is self._staging and self._complete.issuperset(RESOURCE_TYPES):
            if self._live is not None:
                self._retire(self._live, state)
            self._live, self._staging = self._staging, None
            self._stream_problem = ""
            keys, models = len(state.keys_by_hash), len(state.current.models)
            log.info("configuration in force: %d keys, %d models", keys, models)
        if state is self._live:
            self.current = state.current
            self.ready.set()
            if self._on_update:
                self._on_update()
        return reply

    def _retire(self, old: gateway_config.ConfigState, new: gateway_config.ConfigState) -> None:
        """Replace ``old`` without freeing its keys here: views that still hold it read ``new``'s
        keys, and its own go, a shard at a time, between requests."""
        self._retired.extend(old.keys_by_hash.forward_to(new.keys_by_hash))
        if self._release_task is None or self._release_task.done():
            self._release_task = asyncio.get_running_loop().create_task(self._release(), name="xds-release")

    async def _release(self) -> None:
        while self._retired:
            self._retired.pop()  # ~1/768 of the keys: a fraction of a millisecond
            await asyncio.sleep(0)
