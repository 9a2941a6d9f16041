"""Session-wide simulator processes (one per kind) and the conformance checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sim_checks import KEYS, Checks

from simulators import conformance
from simulators.testing import SimulatorProcess


@pytest.fixture(scope="session")
def checks() -> Checks:
    return Checks(conformance.OpenAISpec(), conformance.ProviderChecks())


def _server(kind: str) -> Iterator[SimulatorProcess]:
    with SimulatorProcess(kind, api_key=KEYS[kind]) as sim:
        yield sim


@pytest.fixture(scope="session")
def openai_server() -> Iterator[SimulatorProcess]:
    yield from _server("openai")


@pytest.fixture(scope="session")
def anthropic_server() -> Iterator[SimulatorProcess]:
    yield from _server("anthropic")


@pytest.fixture(scope="session")
def google_server() -> Iterator[SimulatorProcess]:
    yield from _server("google")


@pytest.fixture
def openai_sim(openai_server: SimulatorProcess) -> SimulatorProcess:
    openai_server.clear()
    return openai_server


@pytest.fixture
def anthropic_sim(anthropic_server: SimulatorProcess) -> SimulatorProcess:
    anthropic_server.clear()
    return anthropic_server


@pytest.fixture
def google_sim(google_server: SimulatorProcess) -> SimulatorProcess:
    google_server.clear()
    return google_server
