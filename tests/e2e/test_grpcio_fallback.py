"""With ext_proc on grpc.aio (``INFERY_EXT_PROC_SERVER=grpcio``) the gateway answers as with its own server.

Two gateways side by side, in front of the same simulated providers: one with ext_proc's
own HTTP/2 server (the default, on its Unix socket), one with the ``grpc.aio`` fallback on
TCP, so that the token Envoy injects is checked by the fallback too. Each case runs on both,
through the real OpenAI SDK, and the answers must agree (the simulators answer the same
prompt the same way) as well as be right on their own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import grpc
import openai
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.conformance import assert_openai
from tests.e2e.support import SIM_KEY, Admin, new_tenant, start_gateway, three_provider_catalog

HI = [{"role": "user", "content": "Say hello to the gateway in a few words please"}]
SERVERS = ("h2", "grpcio")
PROCESS = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"


@dataclass
class Gateway:
    stack: Stack
    admin: Admin
    key: str

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.stack.base_url, api_key=key or self.key, max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, SimulatorProcess]]:
    with (
        SimulatorProcess("openai", api_key=SIM_KEY) as primary,
        SimulatorProcess("anthropic", api_key=SIM_KEY) as claude,
        SimulatorProcess("google", api_key=SIM_KEY) as gemini,
    ):
        yield {"openai": primary, "anthropic": claude, "google": gemini}


@pytest.fixture(scope="module")
def gateways(
    tmp_path_factory: pytest.TempPathFactory, sims: dict[str, SimulatorProcess]
) -> Iterator[dict[str, Gateway]]:
    started: dict[str, Gateway] = {}
    stacks: list[Stack] = []
    try:
        for server in SERVERS:
            stack = start_gateway(
                tmp_path_factory.mktemp(server),
                ext_proc_uds=server == "h2",  # grpcio on TCP: Envoy's token, checked by grpc.aio
                INFERY_EXT_PROC_SERVER=server,
                INFERY_EJECT_AFTER_FAILURES="1000",  # a scripted failure reaches the primary every time
            )
            stacks.append(stack)
            admin = Admin(stack.admin_url)
            three_provider_catalog(
                admin, sims["openai"].base_url, sims["anthropic"].base_url, sims["google"].base_url
            )
            started[server] = Gateway(stack, admin, new_tenant(admin, stack, "switch").key)
        yield started
    finally:
        for stack in stacks:
            stack.stop()


def on_both(gateways: dict[str, Gateway], sims: dict[str, SimulatorProcess], ask: Any) -> dict[str, Any]:
    """``ask(gateway)`` on each gateway in turn, the simulators cleared before each."""
    results = {}
    for server in SERVERS:
        for sim in sims.values():
            sim.clear()
        results[server] = ask(gateways[server])
    return results


def test_each_ext_proc_runs_the_server_it_was_given(gateways: dict[str, Gateway]) -> None:
    for server, gateway in gateways.items():
        (name,) = [n for n in gateway.stack.processes if n.startswith("ext_proc")]
        assert f"({server} server)" in gateway.stack.processes[name].log()


def test_a_chat_is_answered_and_charged_the_same(
    gateways: dict[str, Gateway], sims: dict[str, SimulatorProcess]
) -> None:
    def ask(gateway: Gateway) -> dict[str, Any]:
        raw = gateway.client().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HI)
        body = json.loads(raw.http_response.content)
        assert_openai(body, "CreateChatCompletionResponse")
        return {
            "content": body["choices"][0]["message"]["content"],
            "usage": body["usage"],
            "model_used": raw.headers["x-model-used"],
            "credits": Decimal(raw.headers["x-credits-used"]),
        }

    results = on_both(gateways, sims, ask)
    assert results["grpcio"] == results["h2"]
    assert results["h2"]["content"].startswith("Hello! You said:") and results["h2"]["credits"] > 0
    assert results["h2"]["model_used"] == "gpt-4o-mini"


def test_a_stream_is_answered_and_charged_the_same(
    gateways: dict[str, Gateway], sims: dict[str, SimulatorProcess]
) -> None:
    def ask(gateway: Gateway) -> dict[str, Any]:
        stream = gateway.client().chat.completions.create(
            model="gpt-4o-mini", messages=HI, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
        last = chunks[-1]
        assert last.usage is not None and last.model_extra is not None
        return {
            "content": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
            "chunks": len(chunks),
            "usage": last.usage.model_dump(),
            "credits": Decimal(str(last.model_extra["credits_used"])),
            "model_used": stream.response.headers["x-model-used"],
        }

    results = on_both(gateways, sims, ask)
    assert results["grpcio"] == results["h2"]
    assert results["h2"]["content"].startswith("Hello! You said:") and results["h2"]["chunks"] > 2
    assert results["h2"]["credits"] > 0


def test_a_fallback_chain_falls_back_the_same(
    gateways: dict[str, Gateway], sims: dict[str, SimulatorProcess]
) -> None:
    """gpt-4o's provider fails with 503: Envoy retries on Claude (ext_proc's upstream-attempt streams)."""

    def ask(gateway: Gateway) -> dict[str, Any]:
        sims["openai"].script([{"status": 503}])
        raw = gateway.client().chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
        body = json.loads(raw.http_response.content)
        assert_openai(body, "CreateChatCompletionResponse")
        sent = sims["anthropic"].requests()[-1]
        return {
            "content": body["choices"][0]["message"]["content"],
            "model_used": raw.headers["x-model-used"],
            "fallback_from": raw.headers["x-fallback-from"],
            "credits": Decimal(raw.headers["x-credits-used"]),
            "claude_saw": (sent["path"], "x-api-key" in sent["headers"], "authorization" in sent["headers"]),
        }

    results = on_both(gateways, sims, ask)
    assert results["grpcio"] == results["h2"]
    assert (results["h2"]["model_used"], results["h2"]["fallback_from"]) == ("claude-sonnet-4-5", "gpt-4o")
    assert results["h2"]["claude_saw"] == ("/v1/messages", True, False)


def test_a_wrong_key_is_refused_the_same(
    gateways: dict[str, Gateway], sims: dict[str, SimulatorProcess]
) -> None:
    def ask(gateway: Gateway) -> dict[str, Any]:
        with pytest.raises(openai.AuthenticationError) as error:
            gateway.client("inf_not-a-key").chat.completions.create(model="gpt-4o-mini", messages=HI)
        return {"status": error.value.status_code, "body": error.value.body}

    results = on_both(gateways, sims, ask)
    assert results["grpcio"] == results["h2"]
    assert results["h2"]["status"] == 401 and results["h2"]["body"]["code"] == "invalid_api_key"  # type: ignore[index]
    assert sims["openai"].requests() == []


def test_the_grpcio_tcp_port_refuses_a_stream_without_the_token(gateways: dict[str, Gateway]) -> None:
    """Envoy's streams carry the token (the tests above pass); an attacker's do not."""

    async def attack(metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
        port = gateways["grpcio"].stack.ports.ext_proc[0]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.stream_stream(
                PROCESS,
                request_serializer=ep.ProcessingRequest.SerializeToString,
                response_deserializer=ep.ProcessingResponse.FromString,
            )(metadata=metadata, timeout=10)
            return await call.code()

    for metadata in ((), (("x-infery-ext-proc-token", "guess"),)):
        assert asyncio.run(attack(metadata)) == grpc.StatusCode.UNAUTHENTICATED
