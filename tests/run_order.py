"""The order `make test` hands test files to its two workers: the longest first.

Why: `--dist loadfile` gives each worker one file at a time, in the order it is given them. By
default pytest-xdist orders the files by how many tests they hold, most first, which put the
files with one or two long tests (the Dockerfile's build steps, `make up` on a fresh clone, the
lone-copy collection, the wheel install) at the very end of the run: one worker finished them
alone while the other had nothing left to do. Longest first, the run ends on short unit-test
files that the two workers share out evenly. (`make test` passes `--no-loadscope-reorder`, so
xdist keeps this order.)

Nothing else changes: each file still runs whole in one worker, its tests in their own order.
The figures are each file's time in one full run (junit XML); they only need to be roughly
right, and a file not named here runs after them (end-to-end files before the rest). Simulating
xdist's hand-out (400 draws of that run's times, each varied by +-30%), the worker
that finished first waited for the other 30 s on average (63 s at the 90th percentile) in xdist's
order and 6 s (8 s) in this one; that wait is all wall time.
"""

from __future__ import annotations

import pytest

# File -> seconds (setup, call, teardown) in a full `make test` run on 2 busy cores, longest first.
LONGEST_FILES: dict[str, int] = {
    "tests/e2e/test_slow_clients.py": 186,
    "tests/deploy/test_dockerfile.py": 103,
    "tests/e2e/test_traces.py": 81,
    "tests/e2e/test_limits_idempotency.py": 75,
    "tests/e2e/test_ext_proc_health.py": 74,
    "tests/e2e/test_batches.py": 60,
    "tests/clients/test_clients.py": 59,
    "tests/test_settings_docs.py": 58,
    "tests/test_self_contained.py": 51,
    "tests/e2e/test_make_up.py": 45,
    "tests/e2e/test_fallback.py": 41,
    "tests/e2e/test_files.py": 40,
    "tests/e2e/test_billing.py": 34,
    "tests/e2e/test_grpcio_fallback.py": 32,
    "tests/e2e/test_resilience.py": 26,
    "tests/e2e/test_replicas.py": 24,
    "tests/e2e/test_attempt_grant.py": 23,
    "tests/e2e/test_envoy_delta.py": 23,
    "tests/e2e/test_messages.py": 22,
    "tests/e2e/test_header_policy.py": 22,
    "tests/e2e/test_chain_rollout.py": 21,
    "tests/e2e/test_scale.py": 19,
    "tests/control_plane/test_usage_rollups.py": 19,
    "tests/e2e/test_install_wheel.py": 18,
    "tests/e2e/test_providers.py": 17,
    "tests/e2e/test_dashboard_browser.py": 17,
    "tests/ext_proc/h2_grpc/test_frames.py": 17,
    "bench/tests/test_batch_bench.py": 16,
    "tests/e2e/test_policy.py": 16,
    "tests/e2e/test_responses_api.py": 16,
    "tests/e2e/test_errors.py": 16,
}
# Each end-to-end file starts its own gateway (15-20 s on CI) before its tests run.
GATEWAY_DIRS = ("tests/e2e/", "tests/deploy/", "tests/clients/")


def rank(item: pytest.Item) -> int:
    """Lower runs earlier: the named files by their figure, then end-to-end files, then the rest."""
    path = item.nodeid.split("::", 1)[0]
    if path in LONGEST_FILES:
        return -LONGEST_FILES[path]
    return 0 if path.startswith(GATEWAY_DIRS) else 1


def longest_first(items: list[pytest.Item]) -> None:
    """Sort ``items`` in place by :func:`rank`; the sort is stable, so each file's tests stay
    together and in their order, and files of one rank keep the collection's order."""
    items.sort(key=rank)
