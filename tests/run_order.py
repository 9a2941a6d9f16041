"""The order `make test` hands test files to its two workers: the longest first.

Why: `--dist loadfile` gives each worker one file at a time, in the order it is given them. By
default pytest-xdist orders the files by how many tests they hold, most first, which put the
files with one or two long tests (the Dockerfile's build steps, `make up` on a fresh clone, the
lone-copy collection, the wheel install) at the very end of the run: one worker finished them
alone while the other had nothing left to do. Longest first, the run ends on short unit-test
files that the two workers share out evenly. (`make test` passes `--no-loadscope-reorder`, so
xdist keeps this order.)

Nothing else changes: each file still runs whole in one worker, its tests in their own order.
The figures are a file's setup and call times from a CI-like run (2 cores); they only need to
be roughly right, and a file not named here runs after them (end-to-end files before the rest).
"""

from __future__ import annotations

import pytest

# File -> rough seconds on CI, longest first.
LONGEST_FILES: dict[str, int] = {
    "tests/e2e/test_slow_clients.py": 160,
    "tests/e2e/test_traces.py": 85,
    "tests/test_self_contained.py": 85,
    "tests/test_settings_docs.py": 80,
    "tests/e2e/test_batches.py": 75,
    "tests/deploy/test_dockerfile.py": 70,
    "tests/e2e/test_ext_proc_health.py": 70,
    "tests/e2e/test_limits_idempotency.py": 65,
    "tests/clients/test_clients.py": 60,
    "tests/e2e/test_fallback.py": 60,
    "tests/e2e/test_resilience.py": 50,
    "tests/e2e/test_make_up.py": 45,
    "tests/ext_proc/h2_grpc/test_connection.py": 35,
    "tests/e2e/test_chain_rollout.py": 30,
    "tests/e2e/test_install_wheel.py": 30,
    "tests/ext_proc/h2_grpc/test_abuse.py": 25,
    "tests/e2e/test_scale.py": 25,
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
