"""The control plane's gRPC port (xDS + usage) hands out provider keys: only the data plane gets in.

Two credentials, either or both: INFERY_XDS_TOKEN (bearer metadata) and mutual TLS
(INFERY_XDS_TLS_*). The end-to-end gateway uses mutual TLS
(tests/e2e/test_private_ports.py); both are checked here on a real grpc server.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from infery_proto.v1 import config_pb2

from control_plane.__main__ import _grpc_server_credentials
from control_plane.settings import Settings
from control_plane.xds.auth import TokenInterceptor
from control_plane.xds.envoy_cache import EnvoyCache
from control_plane.xds.server import DeltaCache, TypeChanges, ads_handler, resource
from infery.certs import generate

ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
PROVIDER = "type.googleapis.com/infery.v1.Provider"


@contextlib.asynccontextmanager
async def serving(token: str = "", credentials: grpc.ServerCredentials | None = None) -> AsyncIterator[int]:
    delta = DeltaCache()
    provider = config_pb2.Provider(name="openai", api_key="sk-from-xds")
    delta.apply(1, {PROVIDER: TypeChanges([resource(provider.name, 1, provider)])})
    server = grpc.aio.server(interceptors=[TokenInterceptor(token)] if token else [])
    server.add_generic_rpc_handlers((ads_handler(EnvoyCache(), delta, (PROVIDER,)),))
    port = (
        server.add_insecure_port("127.0.0.1:0")
        if credentials is None
        else server.add_secure_port("127.0.0.1:0", credentials)
    )
    await server.start()
    try:
        yield port
    finally:
        await server.stop(grace=0)


async def subscribe(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()
) -> discovery_pb2.DeltaDiscoveryResponse | grpc.StatusCode:
    call = channel.stream_stream(
        ADS,
        request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
        response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
    )(metadata=metadata, timeout=10)
    try:
        await call.write(discovery_pb2.DeltaDiscoveryRequest(type_url=PROVIDER))
        async for response in call:
            return response
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return await call.code()


async def test_the_token_is_required_when_set() -> None:
    async with serving(token="t0ken") as port, grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            # Refused at the call's start; nothing is written (a write racing the refusal
            # makes the client report its own INTERNAL instead).
            call = channel.stream_stream(ADS)(metadata=metadata, timeout=10)
            assert await call.code() == grpc.StatusCode.UNAUTHENTICATED
        served = await subscribe(channel, (("authorization", "Bearer t0ken"),))
        assert isinstance(served, discovery_pb2.DeltaDiscoveryResponse) and served.type_url == PROVIDER


async def test_mutual_tls_needs_the_data_planes_client_certificate(tmp_path: Path) -> None:
    pki = generate(tmp_path / "pki")
    settings = Settings.from_env(
        {
            f"INFERY_XDS_TLS_{k}_FILE": str(v)
            for k, v in (("CERT", pki.server.cert), ("KEY", pki.server.key), ("CA", pki.server.ca))
        }
    )
    credentials = _grpc_server_credentials(settings)
    assert credentials is not None
    ca = pki.client.ca.read_bytes()
    other = generate(tmp_path / "other")  # a certificate from a CA the server does not trust
    async with serving(credentials=credentials) as port:
        target = f"127.0.0.1:{port}"
        async with grpc.aio.insecure_channel(target) as plain:
            assert await subscribe(plain) == grpc.StatusCode.UNAVAILABLE
        for client in (
            grpc.ssl_channel_credentials(root_certificates=ca),
            grpc.ssl_channel_credentials(
                root_certificates=ca,
                private_key=other.client.key.read_bytes(),
                certificate_chain=other.client.cert.read_bytes(),
            ),
        ):
            async with grpc.aio.secure_channel(target, client) as channel:
                assert await subscribe(channel) == grpc.StatusCode.UNAVAILABLE
        good = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=pki.client.key.read_bytes(),
            certificate_chain=pki.client.cert.read_bytes(),
        )
        async with grpc.aio.secure_channel(target, good) as channel:
            served = await subscribe(channel)
            assert isinstance(served, discovery_pb2.DeltaDiscoveryResponse) and served.type_url == PROVIDER


def test_tls_settings_go_together() -> None:
    assert Settings.from_env({}).xds_tls_cert_file is None
    with pytest.raises(ValueError, match="go together"):
        Settings.from_env({"INFERY_XDS_TLS_CERT_FILE": "/c.pem"})
    with pytest.raises(ValueError, match="needs INFERY_XDS_TLS_CERT_FILE"):
        Settings.from_env({"INFERY_XDS_TLS_CA_FILE": "/ca.pem"})
    tls_only = Settings(xds_tls_cert_file="/c", xds_tls_key_file="/k")
    assert tls_only.xds_tls_ca_file is None  # server TLS without client certificates is allowed
