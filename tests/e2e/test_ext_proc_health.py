"""A stopped ext_proc is noticed in seconds: requests fail fast, or go to another ext_proc.

SIGSTOP is the hard case: the process keeps its sockets open, so connections
succeed and only the answers never come. Envoy's gRPC health checks
(``grpc.health.v1.Health/Check`` on ext_proc's own server) take it out of the
cluster, and the short message timeout bounds the requests it already had.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import openai
import pytest

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.e2e.support import SIM_KEY, Admin, eventually, new_tenant, start_gateway

HI = [{"role": "user", "content": "hello"}]
# Generous functional bound: today every request waited for the 30 s message timeout.
FAIL_FAST_S = 12
REDIS_URL = "redis://127.0.0.1:6379/13"


def _signal(stack: Stack, name: str, sig: signal.Signals) -> None:
    os.killpg(stack.processes[name].popen.pid, sig)


def _ext_procs(stack: Stack) -> list[str]:
    return [name for name in stack.processes if name.startswith("ext_proc")]


def _client(stack: Stack, openai_sim: SimulatorProcess, workspace: str) -> openai.OpenAI:
    admin = Admin(stack.admin_url)
    admin.provider("sim", "openai", openai_sim.base_url, SIM_KEY)
    admin.model("gpt-4o-mini", "sim", "gpt-4o-mini")
    # The SDK's own timeout is longer than the old 30 s wait, so a hang shows as one.
    return new_tenant(admin, stack, workspace).client(stack, timeout=45)


def _served(client: openai.OpenAI) -> Callable[[], bool]:
    def check() -> bool:
        started = time.monotonic()
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        return bool(reply.choices[0].message.content) and time.monotonic() - started < FAIL_FAST_S

    return check


def test_a_stopped_ext_proc_fails_requests_fast_with_gateway_unavailable(
    tmp_path, openai_sim: SimulatorProcess
):
    stack = start_gateway(tmp_path)  # one ext_proc, on a Unix socket
    (name,) = _ext_procs(stack)
    try:
        client = _client(stack, openai_sim, "stopped")
        assert _served(client)()
        _signal(stack, name, signal.SIGSTOP)
        for stream in (False, True, False, False):
            started = time.monotonic()
            with pytest.raises(openai.APIStatusError) as err:
                client.chat.completions.create(model="gpt-4o-mini", messages=HI, stream=stream)
            assert time.monotonic() - started < FAIL_FAST_S, "the request waited for the stopped ext_proc"
            assert err.value.status_code == 503
            assert err.value.body["code"] == "gateway_unavailable"  # type: ignore[index]
        _signal(stack, name, signal.SIGCONT)
        eventually(_served(client), timeout=15)
    finally:
        _signal(stack, name, signal.SIGCONT)
        stack.stop()


def test_another_ext_proc_takes_over_from_a_stopped_one(tmp_path, openai_sim: SimulatorProcess):
    stack = start_gateway(tmp_path, ext_procs=2, INFERY_REDIS_URL=REDIS_URL)
    first, second = _ext_procs(stack)
    try:
        client = _client(stack, openai_sim, "takeover")
        served = _served(client)
        assert all(served() for _ in range(4))
        _signal(stack, first, signal.SIGSTOP)
        # Once Envoy has noticed (a few seconds), every request is served by the other one.
        eventually(lambda: all(served() for _ in range(6)), timeout=30)
        # Back: it takes traffic again (with the other one stopped now, only it can serve).
        _signal(stack, first, signal.SIGCONT)
        _signal(stack, second, signal.SIGSTOP)
        eventually(lambda: all(served() for _ in range(6)), timeout=30)
    finally:
        for name in (first, second):
            _signal(stack, name, signal.SIGCONT)
        stack.stop()


def test_a_slow_media_fetch_asks_envoy_for_more_time(tmp_path):
    """The message timeout is short, but a request body phase fetching a slow image
    URL extends it (override_message_timeout) and the request is served."""
    with SimulatorProcess("google", api_key=SIM_KEY) as gemini:
        stack = start_gateway(
            tmp_path,
            INFERY_EXT_PROC_MESSAGE_TIMEOUT_S="1",
            INFERY_MEDIA_ALLOWED_HOSTS=f"127.0.0.1:{gemini.port}",
        )
        try:
            admin = Admin(stack.admin_url)
            admin.provider("google", "google", gemini.base_url, SIM_KEY)
            admin.model("gemini-2-5-flash", "google", "gemini-2.5-flash")
            client = new_tenant(admin, stack, "slow-media").client(stack, timeout=30)
            url = f"{gemini.url}/_sim/images/slow.png?delay_s=2.5"  # longer than the message timeout
            reply = client.chat.completions.create(
                model="gemini-2-5-flash",
                messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],
            )
            assert "saw 1 image(s)" in (reply.choices[0].message.content or "")
        finally:
            stack.stop()
