"""Client compatibility: libraries nobody here wrote, used as their docs say, against the gateway.

One gateway Stack with the three provider simulators serves gpt-4o-mini (OpenAI's format),
claude-sonnet-4-5 (Anthropic's) and gemini-2-5-flash (Gemini's). Each library runs in its
own runtime, as its users run it: the Python ones in the clients' environment
(.venv/clients, tests/clients/requirements.txt: openai-python sync and async, LangChain,
instructor, pydantic-ai, the LiteLLM SDK, LlamaIndex), the Node ones with the versions
pinned in tests/clients/package-lock.json (openai-node, the Vercel AI SDK). One process per
library runs every case for every model (py_scenarios.py, node_scenarios.mjs); each
(library, model, case) is then its own test here, so a change that breaks one framework's
streaming on one provider fails exactly that test.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from infery.stack import REPO, Stack
from simulators.testing import SimulatorProcess
from tests.e2e.support import SIM_KEY, Admin, new_tenant, start_gateway

HERE = Path(__file__).resolve().parent
CLIENTS_PYTHON = REPO / ".venv" / "clients" / "bin" / "python"
MODELS = ("gpt-4o-mini", "claude-sonnet-4-5", "gemini-2-5-flash")
PYTHON = "python"
NODE = "node"

# library -> (runtime, its cases); the scenario scripts implement exactly these.
LIBRARIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "openai-python": (
        PYTHON,
        ("chat", "stream_tutorial_loop", "stream_usage_after_loop", "structured", "tools"),
    ),
    "openai-python-async": (
        PYTHON,
        ("chat", "stream_tutorial_loop", "stream_usage_after_loop", "structured", "tools"),
    ),
    "openai-node": (NODE, ("chat", "stream_tutorial_loop", "stream_usage_after_loop", "structured", "tools")),
    "langchain": (PYTHON, ("chat", "stream", "stream_usage", "structured", "tools")),
    "instructor": (PYTHON, ("chat", "stream", "structured", "structured_json_schema")),
    "pydantic-ai": (PYTHON, ("chat", "stream", "structured", "tools")),
    "litellm": (PYTHON, ("chat", "stream", "stream_usage", "structured", "tools")),
    "llamaindex": (PYTHON, ("chat", "stream", "structured", "tools")),
    "vercel-ai": (NODE, ("chat", "stream_usage", "structured", "tools")),
}

# Cases a library is known to fail, (library, case) -> why; strict, so each fails the moment it is fixed.
# (Issue 12 item 1 -- the credits on the last chunk, no empty `choices` -- emptied it.)
KNOWN_BROKEN: dict[tuple[str, str], str] = {}

_TIMEOUT_S = 240  # one library's runner; they run side by side
# The first test waits for every runner (the session fixture); the rest only read results.
pytestmark = pytest.mark.timeout(_TIMEOUT_S + 60)


@pytest.fixture(scope="session")
def gateway_for_clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    with (
        SimulatorProcess("openai", api_key=SIM_KEY) as gpt,
        SimulatorProcess("anthropic", api_key=SIM_KEY) as claude,
        SimulatorProcess("google", api_key=SIM_KEY) as gemini,
    ):
        stack = start_gateway(tmp_path_factory.mktemp("clients"))
        try:
            admin = Admin(stack.admin_url)
            admin.provider("sim-openai", "openai", gpt.base_url, SIM_KEY)
            admin.provider("sim-anthropic", "anthropic", claude.base_url, SIM_KEY)
            admin.provider("sim-google", "google", gemini.base_url, SIM_KEY)
            admin.model("gpt-4o-mini", "sim-openai", "gpt-4o-mini")
            admin.model("claude-sonnet-4-5", "sim-anthropic", "claude-sonnet-4-5-20250929")
            admin.model("gemini-2-5-flash", "sim-google", "gemini-2.5-flash")
            tenant = new_tenant(admin, stack, "clients")
            yield stack, tenant.key
        finally:
            stack.stop()


def _run_library(library: str, base_url: str, key: str) -> dict[str, dict[str, str | None]]:
    runtime, _ = LIBRARIES[library]
    if runtime == PYTHON:
        argv = [str(CLIENTS_PYTHON), str(HERE / "py_scenarios.py")]
    else:
        argv = [shutil.which("node") or "node", str(HERE / "node_scenarios.mjs")]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "VIRTUAL_ENV"))}
    env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_PROXY": "127.0.0.1,localhost"}
    done = subprocess.run(
        [*argv, library, base_url, key, *MODELS],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT_S,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise AssertionError(
            f"{library} runner failed ({done.returncode}):\n{done.stdout}\n{done.stderr[-4000:]}"
        )
    results: dict[str, dict[str, str | None]] = json.loads(lines[-1])
    return results


@pytest.fixture(scope="session")
def results(gateway_for_clients: tuple[Stack, str]) -> dict[str, Any]:
    """Every library's outcomes, the libraries run side by side (each process waits on the gateway)."""
    missing = [p for p in (CLIENTS_PYTHON, HERE / "node_modules") if not p.exists()]
    if missing:
        pytest.fail(f"client libraries not installed ({', '.join(map(str, missing))}): run `make test`")
    stack, key = gateway_for_clients
    with ThreadPoolExecutor(max_workers=len(LIBRARIES)) as pool:
        futures = {lib: pool.submit(_run_library, lib, stack.base_url, key) for lib in LIBRARIES}
        out: dict[str, Any] = {}
        for lib, future in futures.items():
            try:
                out[lib] = future.result()
            except Exception as exc:  # one broken runner fails its own tests, not the others'
                out[lib] = exc
        return out


def _cases() -> Iterator[Any]:
    for library, (_, cases) in LIBRARIES.items():
        for model in MODELS:
            for case in cases:
                marks = []
                reason = KNOWN_BROKEN.get((library, case))
                if reason:
                    marks.append(pytest.mark.xfail(strict=True, reason=reason))
                yield pytest.param(library, model, case, id=f"{library}-{model}-{case}", marks=marks)


@pytest.mark.parametrize(("library", "model", "case"), list(_cases()))
def test_client_library(results: dict[str, Any], library: str, model: str, case: str) -> None:
    outcome = results[library]
    if isinstance(outcome, Exception):
        raise outcome
    assert set(outcome[model]) == set(LIBRARIES[library][1]), "the runner's cases drifted from LIBRARIES"
    error = outcome[model][case]
    assert error is None, f"{library} / {model} / {case}:\n{error}"
