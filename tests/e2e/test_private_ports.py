"""No provider credential is readable outside the data path (issue 11, item 2).

An attacker on the gateway's host (or network) tries every port that holds a
credential: ext_proc's (it puts provider keys on requests), Envoy's admin (its
config dump held the xDS credential, and xDS hands out every provider key) and
the control plane's gRPC port (xDS + usage).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import struct_pb2, text_format

from infery.stack import Stack
from tests.e2e.support import SIM_KEY, Admin, eventually, new_tenant, start_gateway

PROCESS = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
# ext_proc's resources (provider keys among them) are served over delta xDS.
ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
HI = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def tcp_gateway(tmp_path_factory: pytest.TempPathFactory, openai_sim) -> Iterator[Stack]:
    """ext_proc on loopback TCP, as in docker-compose: its port is open, so it must authenticate."""
    stack = start_gateway(tmp_path_factory.mktemp("tcp"), ext_proc_uds=False)
    try:
        admin = Admin(stack.admin_url)
        admin.provider("sim", "openai", openai_sim.base_url, SIM_KEY)
        admin.model("gpt-4o-mini", "sim", "gpt-4o-mini")
        client = new_tenant(admin, stack, "ports").client(stack)
        assert client.chat.completions.create(model="gpt-4o-mini", messages=HI).choices  # Envoy gets in
        yield stack
    finally:
        stack.stop()


def _attempt_messages() -> list[ep.ProcessingRequest]:
    """What Envoy's upstream filter sends for a chain attempt: the target in host metadata, then a body."""
    metadata = base_pb2.Metadata()
    metadata.filter_metadata["infery.target"].fields["model"].string_value = "gpt-4o-mini"
    attributes = struct_pb2.Struct()
    attributes.fields["xds.upstream_host_metadata"].string_value = text_format.MessageToString(metadata)
    first = ep.ProcessingRequest()
    first.attributes["envoy.filters.http.ext_proc"].CopyFrom(attributes)
    for key, value in (
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        ("content-type", "application/json"),
    ):
        first.request_headers.headers.headers.add(key=key, raw_value=value.encode())
    body = ep.ProcessingRequest()
    body.request_body.body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    body.request_body.end_of_stream = True
    return [first, body]


async def _attack_ext_proc(port: int, metadata: tuple[tuple[str, str], ...]) -> tuple[grpc.StatusCode, bytes]:
    """A plain grpc client on ext_proc's port: (the stream's status, every byte it answered)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(
            PROCESS,
            request_serializer=ep.ProcessingRequest.SerializeToString,
            response_deserializer=ep.ProcessingResponse.FromString,
        )(metadata=metadata)
        # A stream refused at its start ends at once. Writing into that refusal would make
        # the client report its own INTERNAL error instead of the server's status.
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(call.code()), 2), b""
        answered = b""
        for message in _attempt_messages():
            await call.write(message)
            response = await call.read()
            if response is grpc.aio.EOF:
                break
            answered += response.SerializeToString()
        call.cancel()
        return await call.code(), answered


def test_ext_proc_tcp_port_refuses_a_client_without_the_token(tcp_gateway: Stack):
    port = tcp_gateway.ports.ext_proc[0]
    for metadata in ((), (("x-infery-ext-proc-token", "guess"),)):
        code, answered = asyncio.run(asyncio.wait_for(_attack_ext_proc(port, metadata), 10))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert answered == b"" and SIM_KEY.encode() not in answered
    # With the token a stream is served: it is the token that keeps the attacker out.
    token = tcp_gateway.env["INFERY_EXT_PROC_TOKEN"]
    code, answered = asyncio.run(
        asyncio.wait_for(_attack_ext_proc(port, (("x-infery-ext-proc-token", token),)), 10)
    )
    assert code != grpc.StatusCode.UNAUTHENTICATED and answered


def test_ext_proc_behind_a_unix_socket_has_no_tcp_port(gateway: Stack):
    port = gateway.ports.ext_proc[0]
    # Only its Prometheus /metrics (changed on purpose, issue 16: counts, no key, no gRPC), which
    # answers nothing but /metrics.
    metrics_port = gateway.ports.metrics_port(0)
    assert _listening_tcp_ports(gateway.processes[f"ext_proc_{port}"].popen.pid) == {metrics_port}
    assert (
        httpx.post(
            f"http://127.0.0.1:{metrics_port}/envoy.service.ext_proc.v3.ExternalProcessor/Process"
        ).status_code
        != 200
    )
    socket_dir = Path(gateway.ext_proc_socket(port)).parent
    assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o700  # only the gateway's user reaches the socket


@pytest.mark.parametrize("which", ["tcp_gateway", "gateway"])
def test_envoy_admin_is_a_private_unix_socket_and_its_dump_holds_no_secret(
    which: str, request: pytest.FixtureRequest
):
    stack: Stack = request.getfixturevalue(which)
    envoy_pid = stack.processes["envoy"].popen.pid
    # Admin is not on TCP; the stats-only listener is (changed on purpose, issue 16): it forwards
    # GET /stats/prometheus and /ready only (test_observability.py proves the rest is 404).
    assert _listening_tcp_ports(envoy_pid) == {stack.ports.listen, stack.ports.stats_port}
    assert httpx.get(f"{stack.envoy_stats_url}/config_dump").status_code == 404
    admin_socket = Path(stack.envoy_admin_socket)
    assert admin_socket.is_socket() and stat.S_IMODE(admin_socket.stat().st_mode) == 0o600

    dump = stack.envoy_admin("/config_dump", include_eds="true")
    assert dump.status_code == 200 and "infery_xds" in dump.text
    secrets = [
        SIM_KEY,
        stack.pki.client.key.read_text().split("-----")[2].strip()[:40],  # the client key's body
        *(v for k, v in stack.env.items() if k.endswith("_TOKEN")),  # admin, ext_proc, xDS tokens
    ]
    for secret in secrets:
        assert secret not in dump.text
    assert "authorization" not in dump.text.lower()
    # What the dump shows of the credentials: file paths (Envoy redacts even the key's).
    assert str(stack.pki.client.cert) in dump.text and str(stack.pki.client.key) not in dump.text
    if which == "tcp_gateway":
        assert "[redacted]" in stack.envoy_admin("/config_dump", resource="dynamic_active_secrets").text


def test_control_plane_grpc_port_needs_a_client_certificate(gateway: Stack):
    """It serves provider keys: only the data plane's certificate gets them (mutual TLS)."""
    pki = gateway.pki.client

    async def subscribe(credentials: grpc.ChannelCredentials | None) -> object:
        target = f"127.0.0.1:{gateway.ports.xds}"
        channel = (
            grpc.aio.secure_channel(target, credentials) if credentials else grpc.aio.insecure_channel(target)
        )
        async with channel:
            call = channel.stream_stream(
                ADS,
                request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
            )()
            try:
                await call.write(
                    discovery_pb2.DeltaDiscoveryRequest(type_url="type.googleapis.com/infery.v1.Provider")
                )
                async for response in call:
                    return response
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return await call.code()

    def run(credentials: grpc.ChannelCredentials | None) -> object:
        return asyncio.run(asyncio.wait_for(subscribe(credentials), 10))

    ca = pki.ca.read_bytes()
    refused = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED}
    assert run(None) in refused  # plain gRPC: no TLS handshake
    assert run(grpc.ssl_channel_credentials(root_certificates=ca)) in refused  # TLS without a client cert
    served = run(
        grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=pki.key.read_bytes(), certificate_chain=pki.cert.read_bytes()
        )
    )
    assert isinstance(served, discovery_pb2.DeltaDiscoveryResponse)
    assert served.type_url.endswith("infery.v1.Provider")


def _listening_tcp_ports(pid: int) -> set[int]:
    """TCP ports process ``pid`` listens on (Linux /proc: its socket inodes in LISTEN state)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_listening_ports_helper_sees_the_gateway_listener(gateway: Stack):
    eventually(lambda: gateway.ports.listen in _listening_tcp_ports(gateway.processes["envoy"].popen.pid))
