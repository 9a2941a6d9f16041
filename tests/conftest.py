"""Settings shared by the whole suite.

Hypothesis's `too_slow` health check times how long the strategies take to generate data; on CI's
two shared cores (and with the end-to-end tests' processes running beside) that time says more about
the machine than about the strategy, and it failed a property test under one seed. The data checks
(`data_too_large`, `filter_too_much`) stay on: they find strategies that are wrong, not machines that
are busy. Deadlines are off for the same reason; no test here asserts on time.

`make test` runs the suite in two processes (pytest-xdist, one per core, a test module's tests
in one process so that its gateway is started once). Each takes its ports from a range of its
own (`infery.stack.free_port`), so that two gateways starting at once never pick the same port.
The files are handed out longest first (tests/run_order.py).
"""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from infery.stack import FREE_PORTS_ENV
from tests.locked_wheels import fetch as fetch_locked_wheels
from tests.run_order import longest_first

settings.register_profile("infery", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("infery")

PORTS = (20000, 32767)  # below Linux's ephemeral range (32768-60999), shared out among the workers


def _ports_of_this_worker() -> str | None:
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker.startswith("gw") or not count:
        return None
    index, size = int(worker[2:]), (PORTS[1] - PORTS[0] + 1) // int(count)
    low = PORTS[0] + index * size
    return f"{low}-{low + size - 1}"


if (ports := _ports_of_this_worker()) is not None:
    os.environ[FREE_PORTS_ENV] = ports


@pytest.fixture(scope="session")
def locked_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runtime lock's wheels in a local folder, fetched once for the whole run (both xdist
    workers share it: the folder is in their common temporary directory); see tests/locked_wheels.py."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    return fetch_locked_wheels(root)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    longest_first(items)
