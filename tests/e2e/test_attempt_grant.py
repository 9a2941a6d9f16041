"""The upstream-attempt phase serves only streams that Envoy's router phase opened.

Attack: a plain gRPC client on ext_proc's socket (no Envoy, no ``inf_`` key) sends
``request_headers`` with the attribute ``xds.upstream_host_metadata`` naming a chain
target, then a body. It used to get back the attempt's headers: the provider's key.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import struct_pb2, text_format

from infery.stack import EXT_PROC_TOKEN_HEADER, Stack
from simulators.testing import SimulatorProcess
from tests.e2e.support import SIM_KEY, Admin, Tenant, new_tenant, start_gateway

PROCESS = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
HI = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module", params=["uds", "tcp"])
def gw(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, Tenant]]:
    """Envoy reaching ext_proc on its Unix socket, or on TCP (the stream then carries ext_proc's token)."""
    with (
        SimulatorProcess("openai", api_key=SIM_KEY) as primary,
        SimulatorProcess("anthropic", api_key=SIM_KEY) as claude,
    ):
        stack = start_gateway(Path(tmp_path_factory.mktemp("grant")), ext_proc_uds=request.param == "uds")
        try:
            admin = Admin(stack.admin_url)
            admin.provider("openai", "openai", primary.base_url, SIM_KEY)
            admin.provider("anthropic", "anthropic", claude.base_url, SIM_KEY)
            admin.model("gpt-4o", "openai", "gpt-4o")
            admin.model("claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5")
            admin.call("PUT", "/routes/gpt-4o", {"fallbacks": ["claude-sonnet-4-5"], "retry_on": ["5xx"]})
            tenant = new_tenant(admin, stack, "grant")
            # The chain works through Envoy: the gateway's own attempts carry a valid grant.
            primary.script([{"status": 503}])
            reply = tenant.client(stack).chat.completions.with_raw_response.create(
                model="gpt-4o", messages=HI
            )
            assert reply.headers["x-model-used"] == "claude-sonnet-4-5"
            received = claude.requests()[-1]["headers"]
            assert not [h for h in received if h.startswith("x-infery")], (
                "nothing internal reaches a provider"
            )
            yield stack, tenant
        finally:
            stack.stop()


def _attempt_stream(stack: Stack, grant: str | None) -> list[ep.ProcessingResponse]:
    """What ext_proc answers a forged upstream-attempt stream, straight on its Unix socket."""
    host = base_pb2.Metadata()
    host.filter_metadata["infery.target"].update({"model": "claude-sonnet-4-5"})
    attrs = struct_pb2.Struct()
    attrs.update({"xds.upstream_host_metadata": text_format.MessageToString(host)})
    first = ep.ProcessingRequest()
    first.attributes["envoy.filters.http.ext_proc"].CopyFrom(attrs)
    # Where the listener's ext_proc puts a chain's grant for its attempts (Envoy dynamic metadata).
    attempt = {"endpoint": "/chat/completions"}
    if grant is not None:
        attempt["grant"] = grant
    first.metadata_context.filter_metadata["infery.attempt"].update(attempt)
    for key, value in (
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        ("content-type", "application/json"),
    ):
        first.request_headers.headers.headers.add(key=key, raw_value=value.encode())
    body = ep.ProcessingRequest()
    body.request_body.body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'
    body.request_body.end_of_stream = True
    if stack.ext_proc_uds:
        target, metadata = f"unix:{stack.ext_proc_socket(stack.ports.ext_proc[0])}", ()
    else:
        # The transport credential Envoy presents on TCP: this tests the grant, not the token.
        token = stack.env["INFERY_EXT_PROC_TOKEN"]
        target, metadata = f"127.0.0.1:{stack.ports.ext_proc[0]}", ((EXT_PROC_TOKEN_HEADER, token),)
    with grpc.insecure_channel(target) as channel:
        call = channel.stream_stream(
            PROCESS,
            request_serializer=ep.ProcessingRequest.SerializeToString,
            response_deserializer=ep.ProcessingResponse.FromString,
        )
        return list(call(iter([first, body]), timeout=10, metadata=metadata))


@pytest.mark.parametrize(
    "grant",
    [
        None,
        "attempt-v1.9999999999.0123456789abcdef.ws.member.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "garbage",
    ],
    ids=["unsigned", "forged", "malformed"],
)
def test_a_forged_attempt_stream_gets_no_provider_credential(gw: tuple[Stack, Tenant], grant):
    stack, _ = gw
    replies = _attempt_stream(stack, grant)
    wire = b"".join(r.SerializeToString() for r in replies)
    assert SIM_KEY.encode() not in wire, "the provider's key left ext_proc"
    assert replies, "ext_proc answered"
    answer = replies[0]
    assert answer.WhichOneof("response") == "immediate_response"
    assert answer.immediate_response.status.code == 403
    assert b"attempt_not_authorized" in answer.immediate_response.body
