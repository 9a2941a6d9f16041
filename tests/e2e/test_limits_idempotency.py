"""Idempotency keys, rate limits and budgets, with two ext_proc replicas sharing Redis — and in process."""

from __future__ import annotations

import concurrent.futures
import subprocess
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis

from infery.stack import Stack, free_port, port_open, wait_until
from simulators.testing import SimulatorProcess
from tests.e2e.support import SIM_KEY, Admin, Tenant, eventually, new_tenant, start_gateway

REDIS_URL = "redis://127.0.0.1:6379/0"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}


class Gateway:
    def __init__(self, stack: Stack, admin: Admin, sim: SimulatorProcess):
        self.stack, self.admin, self.sim = stack, admin, sim

    def tenant(self, **limits: object) -> Tenant:
        return new_tenant(self.admin, self.stack, f"ws-{uuid.uuid4().hex[:8]}", **limits)

    def post(self, tenant: Tenant, body: dict, key: str | None = None, **kw: object) -> httpx.Response:
        headers = {"authorization": f"Bearer {tenant.key}"}
        if key is not None:
            headers["idempotency-key"] = key
        return httpx.post(
            f"{self.stack.base_url}/chat/completions", json=body, headers=headers, timeout=30, **kw
        )


@pytest.fixture(scope="module", params=["redis", "in-process"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    shared = request.param == "redis"
    if shared:
        redis.Redis.from_url(REDIS_URL).ping()  # the suite needs Redis: fail, never skip
    env = {"INFERY_REDIS_URL": REDIS_URL} if shared else {}
    with SimulatorProcess("openai", api_key=SIM_KEY) as sim:
        # Two ext_proc replicas share Redis; without Redis the state is one process's.
        stack = start_gateway(
            Path(tmp_path_factory.mktemp(request.param)), ext_procs=2 if shared else 1, **env
        )
        try:
            admin = Admin(stack.admin_url)
            admin.provider("sim", "openai", sim.base_url, SIM_KEY)
            admin.model("gpt-4o-mini", "sim", "gpt-4o-mini")
            yield Gateway(stack, admin, sim)
        finally:
            stack.stop()


def _burst(n: int, call) -> list[httpx.Response]:  # type: ignore[no-untyped-def]
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: call(), range(n)))


def test_concurrent_duplicates_make_one_upstream_call_and_one_charge(gw: Gateway):
    tenant = gw.tenant()
    gw.sim.clear()
    gw.sim.script([{"chunk_delay_ms": 0, "action": "hang", "seconds": 1}])
    key = "order-" + uuid.uuid4().hex
    responses = _burst(6, lambda: gw.post(tenant, CHAT, key))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 1, statuses
    assert all(
        r.json()["error"]["code"] == "idempotency_key_in_use" for r in responses if r.status_code == 409
    )
    assert statuses.count(409) == 5
    assert len(gw.sim.requests()) == 1
    first = next(r for r in responses if r.status_code == 200)

    replay = gw.post(tenant, CHAT, key)
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == first.content
    assert replay.headers["x-credits-used"] == first.headers["x-credits-used"]
    assert replay.headers["x-request-id"] != first.headers["x-request-id"]
    assert len(gw.sim.requests()) == 1  # no upstream call
    eventually(lambda: gw.admin.usage_record(replay.headers["x-request-id"]))
    rows = gw.admin.usage(workspace=tenant.workspace, group_by="key")
    assert Decimal(rows[0]["credits"]) == Decimal(first.headers["x-credits-used"])  # charged once


def test_same_key_with_another_body_is_422(gw: Gateway):
    tenant = gw.tenant()
    key = uuid.uuid4().hex
    assert gw.post(tenant, CHAT, key).status_code == 200
    other = gw.post(tenant, {**CHAT, "messages": [{"role": "user", "content": "something else"}]}, key)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"


def test_keys_are_scoped_per_workspace(gw: Gateway):
    a, b = gw.tenant(), gw.tenant()
    key = uuid.uuid4().hex
    first = gw.post(a, CHAT, key)
    second = gw.post(b, CHAT, key)
    assert first.status_code == second.status_code == 200
    assert "idempotent-replayed" not in second.headers


def test_stream_replay_is_byte_identical(gw: Gateway):
    tenant = gw.tenant()
    key = uuid.uuid4().hex
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    gw.sim.clear()
    first = gw.post(tenant, body, key)
    assert first.status_code == 200 and first.text.endswith("data: [DONE]\n\n")
    replay = gw.post(tenant, body, key)
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["content-type"].startswith("text/event-stream")
    assert replay.content == first.content
    assert len(gw.sim.requests()) == 1


def test_a_failed_upstream_call_releases_the_key(gw: Gateway):
    tenant = gw.tenant()
    key = uuid.uuid4().hex
    gw.sim.script([{"status": 500}])
    assert gw.post(tenant, CHAT, key).status_code == 502
    retry = gw.post(tenant, CHAT, key)
    assert retry.status_code == 200 and "idempotent-replayed" not in retry.headers


def test_rpm_holds_across_replicas_under_a_burst(gw: Gateway):
    tenant = gw.tenant(rpm=5)
    responses = _burst(12, lambda: gw.post(tenant, CHAT))
    ok = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert len(ok) == 5 and len(limited) == 7, sorted(r.status_code for r in responses)
    for r in limited:
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(r.headers["retry-after"]) >= 1
        assert r.headers["x-ratelimit-limit-requests"] == "5"
    for r in ok:
        assert r.headers["x-ratelimit-limit-requests"] == "5"
        assert int(r.headers["x-ratelimit-remaining-requests"]) < 5
        assert r.headers["x-ratelimit-reset-requests"]


def test_tpm_reserves_up_front_and_counts_actual_tokens(gw: Gateway):
    tenant = gw.tenant(tpm=1000)
    small = {**CHAT, "max_tokens": 50}
    first = gw.post(tenant, small)
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    # A request whose reservation cannot fit is refused before any upstream call.
    big = {**CHAT, "max_tokens": 5000}
    refused = gw.post(tenant, big)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    # A burst of concurrent requests (all in flight at once: nothing settled yet)
    # cannot overshoot: each reserves its estimate (≈ 200 tokens) up front.
    gw.sim.script([{"action": "hang", "seconds": 1}] * 10)
    responses = _burst(10, lambda: gw.post(tenant, {**CHAT, "max_tokens": 200}))
    gw.sim.clear()
    admitted = sum(r.status_code == 200 for r in responses)
    assert 3 <= admitted <= 1000 // 200, [r.status_code for r in responses]


def test_budget_exhaustion_is_insufficient_quota(gw: Gateway):
    tenant = gw.tenant(budget_credits="0.00001", budget_period="day")
    statuses = []
    for _ in range(5):
        r = gw.post(tenant, CHAT)
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "insufficient_quota"
            break
    assert statuses[0] == 200 and statuses[-1] == 429, statuses


def test_redis_going_down_fails_open_for_limits_and_closed_for_idempotency(tmp_path: Path):
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: port_open(port), "redis-server", 10)
        with SimulatorProcess("openai", api_key=SIM_KEY) as sim:
            stack = start_gateway(tmp_path, ext_procs=2, INFERY_REDIS_URL=f"redis://127.0.0.1:{port}/0")
            try:
                admin = Admin(stack.admin_url)
                admin.provider("sim", "openai", sim.base_url, SIM_KEY)
                admin.model("gpt-4o-mini", "sim", "gpt-4o-mini")
                gw = Gateway(stack, admin, sim)
                tenant = gw.tenant(rpm=1000)
                assert gw.post(tenant, CHAT, "k1").status_code == 200
                server.terminate()
                server.wait(10)
                # Limits: fail open — traffic keeps flowing without the shared counters.
                assert gw.post(tenant, CHAT).status_code == 200
                # Idempotency: 503 rather than risk a double charge.
                r = gw.post(tenant, CHAT, "k2")
                assert r.status_code == 503 and r.json()["error"]["code"] == "idempotency_unavailable"
            finally:
                stack.stop()
    finally:
        if server.poll() is None:
            server.kill()
