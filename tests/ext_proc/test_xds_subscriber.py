"""ext_proc's delta xDS subscriber against the control plane's real ADS server.

A whole configuration arrives in small responses and is in force at once; a configuration that
cannot arrive (here: over the receive limit) is loud: an error logged, readiness false.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from infery_proto.v1 import config_pb2

from control_plane.xds.envoy_cache import EnvoyCache
from control_plane.xds.publisher import DELTA_TYPES
from control_plane.xds.server import SERVER_OPTIONS, DeltaCache, TypeChanges, ads_handler, resource
from ext_proc import xds_client
from ext_proc.xds_client import TYPE_PREFIX, ConfigSubscriber

KEYS = 2_000


def _configuration(delta: DeltaCache) -> None:
    provider = config_pb2.Provider(name="p", kind="openai", cluster="c")
    model = config_pb2.Model(slug="m", provider="p", upstream_model="up")
    workspace = config_pb2.Workspace(id="w", name="w", price_multiplier="1")
    keys = [config_pb2.ApiKey(id=f"k{i}", key_hash=f"{i:064x}", workspace_id="w") for i in range(KEYS)]
    delta.apply(
        1,
        {
            TYPE_PREFIX + "Provider": TypeChanges([resource("p", 1, provider)]),
            TYPE_PREFIX + "Model": TypeChanges([resource("m", 1, model)]),
            TYPE_PREFIX + "Workspace": TypeChanges([resource("w", 1, workspace)]),
            TYPE_PREFIX + "ApiKey": TypeChanges([resource(k.id, 1, k) for k in keys]),
        },
    )


async def _serve(delta: DeltaCache) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((ads_handler(EnvoyCache(), delta, DELTA_TYPES),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def _eventually(check: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "not true in time"
        await asyncio.sleep(0.02)


async def test_a_whole_configuration_arrives_then_each_change() -> None:
    delta = DeltaCache()
    _configuration(delta)
    server, port = await _serve(delta)
    subscriber = ConfigSubscriber(f"127.0.0.1:{port}", "test")
    subscriber.start()
    try:
        await asyncio.wait_for(subscriber.ready.wait(), 10)
        assert subscriber.is_ready() and subscriber.current is not None
        assert len(subscriber.current.keys_by_hash) == KEYS and "m" in subscriber.current.models
        delta.apply(2, {TYPE_PREFIX + "ApiKey": TypeChanges(removed=["k7"])})
        await _eventually(lambda: f"{7:064x}" not in subscriber.current.keys_by_hash)  # type: ignore[union-attr]
        assert len(subscriber.current.keys_by_hash) == KEYS - 1
    finally:
        await subscriber.close()
        await server.stop(None)


async def test_a_configuration_over_the_receive_limit_is_loud_and_not_ready(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(xds_client, "MAX_RECEIVE_BYTES", 16 * 1024)  # below one response of keys
    delta = DeltaCache()
    _configuration(delta)
    server, port = await _serve(delta)
    subscriber = ConfigSubscriber(f"127.0.0.1:{port}", "test")
    caplog.set_level(logging.ERROR, logger="infery.ext_proc.xds")
    subscriber.start()
    try:
        await _eventually(lambda: len([r for r in caplog.records if "cannot arrive" in r.message]) >= 2)
        assert not subscriber.is_ready() and subscriber.current is None
        assert "RESOURCE_EXHAUSTED" in subscriber.problem
    finally:
        await subscriber.close()
        await server.stop(None)


# --- Configuration at scale without stalling requests -------------------------------------
#
# The subscriber applies each response on the event loop, between requests: no synchronous
# slice of that work (a response's application, dropping a replaced configuration, or a
# garbage collection its objects cause) may hold the loop for more than a few milliseconds.
# Slices are measured in CPU time of this thread, which a busy machine does not inflate the
# way it inflates wall-clock time.

SCALE_KEYS = 100_000
CHUNK = 250  # keys per response, as the control plane sends them (MAX_DELTA_RESOURCES)
SLICE_MS = 6.0  # ~1 ms per response on a quiet core; a replaced configuration took ~23 ms at once


def _push(revision: int, keys: range) -> list[discovery_pb2.DeltaDiscoveryResponse]:
    """A whole configuration as the control plane sends it: small responses, the revision on
    the last one of each type."""

    def response(
        kind: str, messages: list[tuple[str, object]], last: bool
    ) -> discovery_pb2.DeltaDiscoveryResponse:
        out = discovery_pb2.DeltaDiscoveryResponse(type_url=TYPE_PREFIX + kind)
        if last:
            out.system_version_info = str(revision)
        for name, message in messages:
            item = out.resources.add(name=name, version=str(revision))
            item.resource.Pack(message, type_url_prefix="type.googleapis.com/")  # type: ignore[arg-type]
        return out

    secret = config_pb2.DataPlaneSecret(name="s", attempt_grant_key=b"k" * 32)
    out = [
        response("Provider", [("p", config_pb2.Provider(name="p", kind="openai", cluster="c"))], True),
        response("Model", [("m", config_pb2.Model(slug="m", provider="p", upstream_model="up"))], True),
        response("Workspace", [("w", config_pb2.Workspace(id="w", name="w", price_multiplier="1"))], True),
        response("Route", [], True),
        response("DataPlaneSecret", [("s", secret)], True),
    ]
    for start in range(keys.start, keys.stop, CHUNK):
        chunk = range(start, min(start + CHUNK, keys.stop))
        messages = [
            (
                f"k{i}",
                config_pb2.ApiKey(
                    id=f"k{i}", key_hash=f"{i:064x}", workspace_id="w", member_id="m", name="n"
                ),
            )
            for i in chunk
        ]
        out.append(response("ApiKey", messages, chunk.stop == keys.stop))
    return out


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    """What is loaded before serving is frozen, as ext_proc does once it is ready (__main__)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _cpu_ms(work: Callable[[], object]) -> float:
    started = time.thread_time()
    work()
    return (time.thread_time() - started) * 1000


async def test_a_new_configuration_of_100k_keys_replaces_the_old_in_slices_of_a_few_ms(
    frozen_heap: None,
) -> None:
    """A reconnection loads a whole new configuration while the old one serves, then swaps.
    Dropping the old one's 10^5 keys at once held the loop ~23 ms; they now go a shard at a time."""
    subscriber = ConfigSubscriber("unused:0", "test")
    for response in _push(1, range(SCALE_KEYS)):
        subscriber._apply(response)
    assert subscriber.is_ready() and len(subscriber.current.keys_by_hash) == SCALE_KEYS  # type: ignore[union-attr]

    subscriber._begin()  # a new connection: the control plane sends everything again, one key moved on
    slices = [_cpu_ms(lambda r=r: subscriber._apply(r)) for r in _push(2, range(1, SCALE_KEYS + 1))]  # type: ignore[misc]
    while subscriber._retired:  # the replaced configuration's keys, released between requests
        slices.append(await _slice_ms())

    assert max(slices) < SLICE_MS, f"the longest slice held the event loop {max(slices):.1f} ms"
    keys = subscriber.current.keys_by_hash  # type: ignore[union-attr]
    assert len(keys) == SCALE_KEYS and f"{0:064x}" not in keys and f"{SCALE_KEYS:064x}" in keys
    await subscriber.close()


async def _slice_ms() -> float:
    """CPU time of one turn of the event loop (the other tasks' work until we run again)."""
    started = time.thread_time()
    await asyncio.sleep(0)
    return (time.thread_time() - started) * 1000


async def test_a_request_holding_the_replaced_configuration_reads_the_new_keys() -> None:
    """The replaced configuration's keys are released while requests may still hold it: such a
    request never sees them half gone, it reads the new configuration's keys (and their changes)."""
    subscriber = ConfigSubscriber("unused:0", "test")
    for response in _push(1, range(1000)):
        subscriber._apply(response)
    held = subscriber.current
    assert held is not None
    subscriber._begin()
    for response in _push(2, range(1, 1001)):
        subscriber._apply(response)
    while subscriber._retired:
        await asyncio.sleep(0)
    subscriber._apply(_push(3, range(5000, 5001))[-1])
    for view in (subscriber.current, held):
        keys = view.keys_by_hash  # type: ignore[union-attr]
        assert f"{0:064x}" not in keys and f"{1000:064x}" in keys and f"{5000:064x}" in keys
        assert keys.get(f"{1:064x}") == ("k1", f"{1:064x}", "w", "m", "n")
    await subscriber.close()


def test_keys_leave_the_garbage_collector_nothing_to_walk(frozen_heap: None) -> None:
    """A collection walks every object the collector tracks and every reference they hold.
    Keys held as tuples kept the dicts they went into tracked: each collection in the middle
    of a load walked ~2 references per key (pauses of 4-10 ms at 10^5 keys). Strings only:
    nothing, at any number of keys."""
    subscriber = ConfigSubscriber("unused:0", "test")
    push = _push(1, range(SCALE_KEYS))

    def walked() -> int:
        gc.collect(1)  # the young generations, as most collections are; tuples get untracked
        return sum(len(gc.get_referents(o)) for o in gc.get_objects())

    before = walked()
    for response in push:
        subscriber._apply(response)
    assert subscriber.current is not None and len(subscriber.current.keys_by_hash) == SCALE_KEYS
    per_key = (walked() - before) / SCALE_KEYS
    assert per_key < 0.01, f"a collection walks {per_key:.2f} references per key"
