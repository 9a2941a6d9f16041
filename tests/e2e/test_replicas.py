"""Two data-plane replicas (Envoy + ext_proc each) on one control plane on PostgreSQL, sharing Redis.

What horizontal scale promises (issue 19, item 5), under concurrent load on both replicas:
limits are exact across them (rpm N admits exactly N, wherever the requests land), a revoked key
is refused by both within a second, and every request served by either is one usage record.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.e2e.support import (
    SIM_KEY,
    Admin,
    Tenant,
    eventually,
    new_tenant,
    postgres_database,
    replica_of,
    start_gateway,
    start_replica,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
HI = [{"role": "user", "content": "hello from a replica"}]
REVOCATION_BOUND_S = 1.0  # the promise: a revocation is in force on every replica within a second


PINNED_PER_REPLICA = 4  # keep-alive connections held to each replica's Envoy


@dataclass
class Replicas:
    stacks: tuple[Stack, Stack]
    admin: Admin
    # Per replica, clients whose one keep-alive connection is held by that replica's Envoy.
    pinned: tuple[list[httpx.Client], list[httpx.Client]]

    def tenant(self, **limits: object) -> Tenant:
        tenant = new_tenant(self.admin, self.stacks[0], f"ws-{uuid.uuid4().hex[:8]}", **limits)
        eventually(lambda: all(self.status(r, tenant.key) == 200 for r in (0, 1)))  # in force on both
        return tenant

    def client(self, replica: int, n: int = 0) -> httpx.Client:
        return self.pinned[replica][n % len(self.pinned[replica])]

    def status(self, replica: int, key: str) -> int:
        return self.client(replica).get("/models", headers=_auth(key)).status_code

    def chat(self, replica: int, key: str, n: int = 0, stream: bool = False) -> httpx.Response:
        body: dict[str, object] = {"model": "gpt-4o-mini", "messages": HI, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        return self.client(replica, n).post("/chat/completions", json=body, headers=_auth(key))


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    redis.Redis.from_url(REDIS_URL).ping()  # the suite needs Redis: fail, never skip
    with contextlib.ExitStack() as cleanup:
        database_url = cleanup.enter_context(postgres_database())
        sim = cleanup.enter_context(SimulatorProcess("openai", api_key=SIM_KEY))
        # Pinned connections stay open between tests: Envoy's idle timeout is longer than the module.
        env = {
            "INFERY_DATABASE_URL": database_url,
            "INFERY_REDIS_URL": REDIS_URL,
            "INFERY_IDLE_TIMEOUT_S": "900",
        }
        primary = start_gateway(Path(tmp_path_factory.mktemp("primary")), **env)
        cleanup.callback(primary.stop)
        replica = start_replica(primary, Path(tmp_path_factory.mktemp("replica")))
        cleanup.callback(replica.stop)
        admin = Admin(primary.admin_url)
        admin.provider("sim", "openai", sim.base_url, SIM_KEY)
        admin.model("gpt-4o-mini", "sim", "gpt-4o-mini")
        probe = new_tenant(admin, primary, "replicas-probe")
        stacks = (primary, replica)
        pinned: tuple[list[httpx.Client], list[httpx.Client]] = ([], [])
        for _ in range(100):  # the kernel picks an Envoy per connection: open until each has enough
            if min(len(p) for p in pinned) >= PINNED_PER_REPLICA:
                break
            client = httpx.Client(
                base_url=primary.base_url, timeout=30, limits=httpx.Limits(max_connections=1)
            )
            cleanup.callback(client.close)
            try:
                pinned[replica_of(stacks, client, "/models", _auth(probe.key))].append(client)
            except httpx.HTTPStatusError:  # the probe's key not yet in force on that replica
                time.sleep(0.05)
        assert min(len(p) for p in pinned) >= PINNED_PER_REPLICA, [len(p) for p in pinned]
        yield Replicas(stacks, admin, pinned)


@contextlib.contextmanager
def background_load(replicas: Replicas) -> Iterator[list[int]]:
    """Chat requests of their own tenant on both replicas, one thread each, until the block ends."""
    tenant = replicas.tenant()
    statuses: list[int] = []
    stop = threading.Event()

    def loop(replica: int) -> None:
        while not stop.is_set():
            statuses.append(replicas.chat(replica, tenant.key, n=PINNED_PER_REPLICA - 1).status_code)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = [pool.submit(loop, replica) for replica in (0, 1)]
        eventually(lambda: len(statuses) >= 2)
        try:
            yield statuses
        finally:
            stop.set()
            for future in running:
                future.result()


def test_rpm_admits_exactly_n_across_both_replicas(replicas: Replicas) -> None:
    limit = 10
    tenant = replicas.tenant(rpm=limit)
    with background_load(replicas) as load, concurrent.futures.ThreadPoolExecutor(6) as pool:
        # Three connections per replica (the fourth carries the load), requests alternating.
        calls = [pool.submit(replicas.chat, n % 2, tenant.key, n // 2 % 3) for n in range(3 * limit)]
        responses = [call.result() for call in calls]
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * limit + [429] * (2 * limit), statuses
    for response in responses:
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert load and set(load) == {200}


def test_a_revocation_is_in_force_on_both_replicas_within_a_second(replicas: Replicas) -> None:
    tenant = replicas.tenant()
    with background_load(replicas):
        replicas.admin.call("DELETE", f"/workspaces/{tenant.workspace}/keys/{tenant.key_id}")
        revoked_at = time.monotonic()
        for replica in (0, 1):
            # Polled until the promise's bound, measured from the admin API's answer.
            remaining = REVOCATION_BOUND_S - (time.monotonic() - revoked_at)
            refused = lambda replica=replica: replicas.status(replica, tenant.key) == 401  # noqa: E731
            eventually(refused, timeout=max(0.0, remaining))
    for replica in (0, 1):
        response = replicas.chat(replica, tenant.key)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_every_request_on_either_replica_is_one_usage_record(replicas: Replicas) -> None:
    tenant = replicas.tenant()
    plan = [(n % 2, n // 2 % PINNED_PER_REPLICA, n % 3 == 0) for n in range(120)]  # a third streamed
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda c: replicas.chat(c[0], tenant.key, c[1], stream=c[2]), plan))
    assert [r.status_code for r in responses] == [200] * len(plan)
    served_tokens = sum(_tokens(r) for r in responses)

    def recorded() -> dict[str, int] | None:
        rows = replicas.admin.usage(workspace=tenant.workspace)
        return rows[0] if rows and rows[0]["requests"] >= len(plan) else None

    total = eventually(recorded, timeout=30)
    assert total["requests"] == len(plan)  # none lost, none twice
    assert total["input_tokens"] + total["output_tokens"] == served_tokens
    for response in responses:
        record = replicas.admin.usage_record(response.headers["x-request-id"])
        assert record is not None and record["key_id"] == tenant.key_id


def _tokens(response: httpx.Response) -> int:
    """The tokens the client was told it used: the body's usage, or the stream's usage chunk."""
    if not response.headers["content-type"].startswith("text/event-stream"):
        usage = response.json()["usage"]
        return int(usage["prompt_tokens"]) + int(usage["completion_tokens"])
    for line in response.text.splitlines():
        if line.startswith("data: {"):
            usage = json.loads(line.removeprefix("data: ")).get("usage")
            if usage:
                return int(usage["prompt_tokens"]) + int(usage["completion_tokens"])
    raise AssertionError(f"no usage in the stream: {response.text[-500:]}")
