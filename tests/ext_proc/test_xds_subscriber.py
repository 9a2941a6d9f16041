"""ext_proc's delta xDS subscriber against the control plane's real ADS server.

A whole configuration arrives in small responses and is in force at once; a configuration that
cannot arrive (here: over the receive limit) is loud: an error logged, readiness false.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from infery_proto.v1 import config_pb2

from control_plane.xds.publisher import DELTA_TYPES
from control_plane.xds.server import SERVER_OPTIONS, DeltaCache, TypeChanges, XdsCache, ads_handler, resource
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
    server.add_generic_rpc_handlers((ads_handler(XdsCache(), delta, DELTA_TYPES),))
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
