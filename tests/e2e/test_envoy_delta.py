"""A real Envoy on delta xDS (ADS `DELTA_GRPC`): it reconnects to a restarted control plane
without being sent again what it has, and a restarted Envoy is sent everything.

Envoy names the versions it has when it reconnects (`initial_resource_versions`); versions
are digests of each resource's content, so a restarted control plane building the same
configuration has nothing to send (control_plane/xds/envoy_cache.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.e2e.support import SIM_KEY, Admin, eventually, new_tenant, start_gateway

HI = [{"role": "user", "content": "hello"}]
CHAIN = {"fallbacks": ["gpt-4o-mini"], "retry_on": ["5xx"], "attempt_timeout_s": 5, "total_timeout_s": 20}


def _stat(stack: Stack, name: str) -> float:
    """An Envoy counter or gauge from its Prometheus stats, summed over its labels."""
    text = httpx.get(f"{stack.envoy_stats_url}/stats/prometheus", timeout=5).text
    values = re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    assert values, f"Envoy has no {name}"
    return sum(float(v) for v in values)


def _updates(stack: Stack) -> tuple[float, float]:
    """Responses Envoy took for clusters and for routes, applied or refused (its `update_attempt`
    counts its failed connections too)."""
    return (
        sum(_stat(stack, f"envoy_cluster_manager_cds_update_{n}") for n in ("success", "rejected")),
        sum(_stat(stack, f"envoy_http_rds_update_{n}") for n in ("success", "rejected")),
    )


def test_envoy_reconnects_without_a_resend_and_a_restarted_envoy_gets_everything(
    tmp_path: Path, openai_sim: SimulatorProcess
) -> None:
    stack = start_gateway(tmp_path)
    try:
        admin = Admin(stack.admin_url)
        admin.provider("sim", "openai", openai_sim.base_url, SIM_KEY)
        admin.model("gpt-4o", "sim", "gpt-4o")
        admin.model("gpt-4o-mini", "sim", "gpt-4o-mini")
        admin.call("PUT", "/routes/gpt-4o", CHAIN)
        client = new_tenant(admin, stack, "delta").client(stack)

        def served(model: str) -> bool:
            return bool(client.chat.completions.create(model=model, messages=HI).choices[0].message.content)

        eventually(lambda: served("gpt-4o"), timeout=10)
        clusters = _stat(stack, "envoy_cluster_manager_active_clusters")

        # The control plane restarts: Envoy reconnects naming what it has, and is sent nothing.
        before = _updates(stack)
        stack.stop_process("control_plane")
        eventually(lambda: _stat(stack, "envoy_control_plane_connected_state") == 0, timeout=10)
        stack.start_control_plane()
        eventually(lambda: _stat(stack, "envoy_control_plane_connected_state") == 1, timeout=15)
        admin = Admin(stack.admin_url)
        # A change made after the reconnection arrives: a chain for another model.
        admin.model("gpt-4.1", "sim", "gpt-4.1")
        admin.call("PUT", "/routes/gpt-4.1", CHAIN)
        eventually(lambda: _stat(stack, "envoy_cluster_manager_active_clusters") == clusters + 1, timeout=10)
        cds, rds = _updates(stack)
        # One cluster response, for the new chain (the route configuration does not change with
        # chains); nothing was re-sent on reconnecting.
        assert (cds - before[0], rds - before[1]) == (1, 0)
        assert served("gpt-4o") and eventually(lambda: served("gpt-4.1"), timeout=10)

        # A restarted Envoy has nothing: it is sent every cluster and the routes.
        stack.stop_process("envoy")
        stack.start_envoy()
        eventually(lambda: _stat(stack, "envoy_cluster_manager_active_clusters") == clusters + 1, timeout=10)
        assert served("gpt-4o") and served("gpt-4.1")
    finally:
        stack.stop()
