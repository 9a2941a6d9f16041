"""Keeps the xDS cache equal to the store.

A configuration commit in this process triggers a publish at once; a poll of
the store's revision catches commits made by other control-plane replicas
sharing the database. Database reads and protobuf building run in a worker
thread so that the xDS and admin servers never stall.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sqlmodel import Session

from control_plane.store import changes
from control_plane.store.snapshot import Snapshot, load_snapshot
from control_plane.xds import envoy_config
from control_plane.xds.server import CLUSTER, LISTENER, ROUTE, XdsCache

log = logging.getLogger("infery.control_plane.xds")

_T = "type.googleapis.com/infery.v1."


def build_resources(snapshot: Snapshot, listener: envoy_config.ListenerSettings) -> dict[str, list[Any]]:
    """Every xDS resource of a snapshot, by type URL."""
    return {
        CLUSTER: [envoy_config.provider_cluster(p, listener) for p in snapshot.providers]
        + _chain_clusters(snapshot, listener),
        LISTENER: [envoy_config.listener(listener)],
        ROUTE: [envoy_config.route_configuration(snapshot.routes, listener)],
        _T + "Provider": list(snapshot.providers),
        _T + "Model": list(snapshot.models),
        _T + "Workspace": list(snapshot.workspaces),
        _T + "ApiKey": list(snapshot.api_keys),
        _T + "Route": list(snapshot.routes),
    }


def _chain_clusters(snapshot: Snapshot, listener: envoy_config.ListenerSettings) -> list[Any]:
    models = {m.slug: m for m in snapshot.models}
    providers = {p.name: p for p in snapshot.providers}
    clusters = []
    for route in snapshot.routes:
        if not route.cluster:
            continue
        slugs = [route.slug, *route.fallbacks]
        targets = [(models[s], providers[models[s].provider]) for s in slugs if s in models]
        if len(targets) == len(slugs):  # the store keeps references valid; never serve a partial chain
            clusters.append(envoy_config.chain_cluster(route, targets, listener))
    return clusters


class Publisher:
    def __init__(
        self,
        cache: XdsCache,
        session_factory: Callable[[], Session],
        listener: envoy_config.ListenerSettings,
        poll_interval_s: float = 0.5,
    ) -> None:
        self._cache = cache
        self._sessions = session_factory
        self._listener = listener
        self._poll_interval_s = poll_interval_s
        self._wake = asyncio.Event()
        self._revision: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Callable[[], None] | None = None

    async def start(self) -> None:
        await self.publish()
        loop = asyncio.get_running_loop()

        def wake() -> None:  # called from the committing thread
            loop.call_soon_threadsafe(self._wake.set)

        self._unsubscribe = changes.subscribe(wake)
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._poll())]

    async def close(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def publish(self) -> None:
        snapshot, resources = await asyncio.to_thread(self._load)
        for type_url, items in resources.items():
            self._cache.set(type_url, items)
        self._revision = snapshot.revision
        log.debug("published revision %s", snapshot.revision)

    def _load(self) -> tuple[Snapshot, dict[str, list[Any]]]:
        with self._sessions() as session:
            snapshot = load_snapshot(session)
        return snapshot, build_resources(snapshot, self._listener)

    def _current_revision(self) -> int:
        with self._sessions() as session:
            return changes.current_revision(session)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.publish()
            except Exception:
                log.exception("publishing the configuration failed; retrying")
                await asyncio.sleep(0.2)
                self._wake.set()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval_s)
            try:
                if await asyncio.to_thread(self._current_revision) != self._revision:
                    self._wake.set()
            except Exception:
                log.warning("polling the configuration revision failed", exc_info=True)
