"""End-to-end fixtures: a real gateway (control plane + ext_proc + Envoy) in front of simulated providers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.e2e.support import PRICES, SIM_KEY, Admin, Tenant, new_tenant, start_gateway


@pytest.fixture(scope="session")
def openai_sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess("openai", api_key=SIM_KEY) as sim:
        yield sim


@pytest.fixture(scope="session")
def claude_sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess("anthropic", api_key=SIM_KEY) as sim:
        yield sim


@pytest.fixture(scope="session")
def gemini_sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess("google", api_key=SIM_KEY) as sim:
        yield sim


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_gateway(tmp_path_factory.mktemp("gateway"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def admin(gateway: Stack) -> Admin:
    return Admin(gateway.admin_url)


@pytest.fixture(scope="session")
def catalog(admin: Admin, openai_sim: SimulatorProcess) -> None:
    admin.provider("sim-openai", "openai", openai_sim.base_url, SIM_KEY)
    admin.model("gpt-4o-mini", "sim-openai", "gpt-4o-mini")
    admin.model(
        "text-embedding-3-small",
        "sim-openai",
        "text-embedding-3-small",
        {**PRICES, "input_per_mtok": "0.02", "output_per_mtok": None, "cached_input_per_mtok": None},
    )
    admin.model("dall-e-3", "sim-openai", "dall-e-3", {**{k: None for k in PRICES}, "per_image": "0.04"})


@pytest.fixture(scope="session")
def three_formats(
    admin: Admin,
    catalog: None,
    openai_sim: SimulatorProcess,
    claude_sim: SimulatorProcess,
    gemini_sim: SimulatorProcess,
) -> dict[str, SimulatorProcess]:
    """gpt-4o-mini, claude-sonnet-4-5 and gemini-2-5-flash on the session gateway: slug -> simulator."""
    admin.provider("sim-anthropic", "anthropic", claude_sim.base_url, SIM_KEY)
    admin.provider("sim-google", "google", gemini_sim.base_url, SIM_KEY)
    admin.model("claude-sonnet-4-5", "sim-anthropic", "claude-sonnet-4-5-20250929")
    admin.model("gemini-2-5-flash", "sim-google", "gemini-2.5-flash")
    return {"gpt-4o-mini": openai_sim, "claude-sonnet-4-5": claude_sim, "gemini-2-5-flash": gemini_sim}


@pytest.fixture(scope="session")
def tenant(admin: Admin, gateway: Stack, catalog: None) -> Tenant:
    return new_tenant(admin, gateway, "acme")


@pytest.fixture
def client(tenant: Tenant, gateway: Stack) -> openai.OpenAI:
    return tenant.client(gateway)


@pytest.fixture(autouse=True)
def _show_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "gateway" in request.fixturenames:
        print(request.getfixturevalue("gateway").logs())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report
