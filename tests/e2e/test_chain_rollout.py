"""A chain created or removed while its model is busy: every request is served, old route or new chain.

ext_proc names the cluster a request goes to; Envoy (both on delta xDS)
must already have it. A chain's cluster reaches ext_proc only once every Envoy has
answered it, and leaves Envoy only once ext_proc no longer uses it
(control_plane/xds/publisher.py). Before, ext_proc learned a new chain while Envoy was
still applying its cluster: requests for the model got 503 (no cluster) for up to ~0.8 s.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.e2e.support import SIM_KEY, Admin, Tenant, new_tenant, start_gateway

HI = [{"role": "user", "content": "Say hello in a few words"}]
CHAIN = {
    "fallbacks": ["claude-sonnet-4-5"],
    "retry_on": ["5xx"],
    "attempt_timeout_s": 5,
    "total_timeout_s": 20,
}
CLIENTS = 4  # concurrent callers: one request in flight per caller
ROUNDS = 6  # each: create the chain, hammer; remove it, hammer
HAMMER_S = 0.6  # how long each phase sends requests after the write


@pytest.fixture(scope="module")
def rollout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Admin, Tenant]]:
    with (
        SimulatorProcess("openai", api_key=SIM_KEY) as primary,
        SimulatorProcess("anthropic", api_key=SIM_KEY) as claude,
    ):
        stack = start_gateway(Path(tmp_path_factory.mktemp("rollout")))
        try:
            admin = Admin(stack.admin_url)
            admin.provider("openai", "openai", primary.base_url, SIM_KEY)
            admin.provider("anthropic", "anthropic", claude.base_url, SIM_KEY)
            admin.model("gpt-4o", "openai", "gpt-4o")
            admin.model("claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5")
            # Other chains make each Envoy cluster update take longer than ext_proc's, as at scale.
            for i in range(40):
                admin.model(f"other-{i}", "openai", "gpt-4o")
                admin.call("PUT", f"/routes/other-{i}", {**CHAIN, "fallbacks": ["claude-sonnet-4-5"]})
            yield stack, admin, new_tenant(admin, stack, "rollout")
        finally:
            stack.stop()


def _hammer(client: openai.OpenAI, seconds: float, outcomes: Counter[str], lock: threading.Lock) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
            outcome = f"200 {raw.headers.get('x-model-used')}"
        except openai.APIStatusError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            outcome = f"{exc.status_code} {body.get('code') or body.get('error', {}).get('code')}"
        with lock:
            outcomes[outcome] += 1


def test_a_chain_created_or_removed_under_load_never_answers_503(rollout: tuple[Stack, Admin, Tenant]):
    stack, admin, tenant = rollout
    clients = [tenant.client(stack, timeout=30) for _ in range(CLIENTS)]
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def phase(write: object) -> None:
        callers = [
            threading.Thread(target=_hammer, args=(c, HAMMER_S + 0.2, outcomes, lock)) for c in clients
        ]
        for t in callers:
            t.start()
        time.sleep(0.2)  # requests in flight when the write lands
        write()  # type: ignore[operator]
        for t in callers:
            t.join()

    for _ in range(ROUNDS):
        phase(lambda: admin.call("PUT", "/routes/gpt-4o", CHAIN))
        phase(lambda: admin.call("DELETE", "/routes/gpt-4o"))
    served = sum(n for outcome, n in outcomes.items() if outcome.startswith("200 "))
    # Served by the model itself (old route or chain's primary): never an error in between.
    assert served == sum(outcomes.values()), outcomes
    assert served > 8 * ROUNDS, outcomes
