"""What crosses between the client and the provider: an allow-list per provider kind, both ways.

A client must not choose the gateway's provider account (OpenAI-Organization, x-goog-user-project),
hand the provider its cookies or proxy credentials, or set the gateway's internal headers; a provider
must not set them either (a forged local-reply marker made a 200 answer free).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.e2e.support import (
    SIM_KEY,
    Admin,
    Tenant,
    envoy_stat,
    eventually,
    new_tenant,
    start_gateway,
    three_provider_catalog,
)

HI = [{"role": "user", "content": "Say hello in a few words"}]
# What a client may try to steer the gateway's provider account or internals with.
FORBIDDEN = {
    "OpenAI-Organization": "org-attacker",
    "OpenAI-Project": "proj_attacker",
    "OpenAI-Beta": "assistants=v2",
    "Cookie": "session=attacker",
    "Proxy-Authorization": "Basic YXR0YWNrZXI6eA==",
    "x-goog-user-project": "attacker-project",
    "X-Forwarded-Host": "attacker.example",
    "x-infery-served": "gemini-2-5-flash",
    "x-infery-local-reply": "upstream_error",
    "x-stainless-os": "Attacker",
}


class Gw:
    def __init__(self, stack: Stack, admin: Admin, tenant: Tenant, sims: dict[str, SimulatorProcess]):
        self.stack, self.admin, self.tenant, self.sims = stack, admin, tenant, sims

    def post(self, model: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(
            f"{self.stack.base_url}/chat/completions",
            json={"model": model, "messages": HI},
            headers={"authorization": f"Bearer {self.tenant.key}", **(headers or {})},
            timeout=30,
        )


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    with (
        SimulatorProcess("openai", api_key=SIM_KEY) as openai_sim,
        SimulatorProcess("anthropic", api_key=SIM_KEY) as claude,
        SimulatorProcess("google", api_key=SIM_KEY) as gemini,
    ):
        stack = start_gateway(Path(tmp_path_factory.mktemp("headers")), INFERY_EJECT_AFTER_FAILURES="1000")
        try:
            admin = Admin(stack.admin_url)
            three_provider_catalog(admin, openai_sim.base_url, claude.base_url, gemini.base_url)
            tenant = new_tenant(admin, stack, "headers")
            yield Gw(stack, admin, tenant, {"openai": openai_sim, "anthropic": claude, "google": gemini})
        finally:
            stack.stop()


@pytest.fixture(autouse=True)
def _clear(gw: Gw) -> None:
    for sim in gw.sims.values():
        sim.clear()


def _assert_only_allowed(received: dict[str, str], extra_allowed: frozenset[str] = frozenset()) -> None:
    names = {k.lower() for k in received}
    leaked = {k.lower() for k in FORBIDDEN} & names
    assert not leaked, f"client headers reached the provider: {sorted(leaked)}"
    internal = sorted(n for n in names if n.startswith(("x-infery", "x-envoy")))
    assert not internal, f"internal headers reached the provider: {internal}"
    assert "user-agent" in names
    assert "authorization" not in names or "authorization" in extra_allowed


@pytest.mark.parametrize(
    ("model", "sim"),
    [("gpt-4o-mini", "openai"), ("claude-sonnet-4-5", "anthropic"), ("gemini-2-5-flash", "google")],
)
def test_a_single_attempt_forwards_only_the_allow_list(gw: Gw, model: str, sim: str):
    resp = gw.post(model, {**FORBIDDEN, "anthropic-beta": "prompt-caching-2024-07-31"})
    assert resp.status_code == 200, resp.text
    received = gw.sims[sim].requests()[-1]["headers"]
    _assert_only_allowed(received, frozenset({"authorization"}) if sim == "openai" else frozenset())
    if sim == "openai":
        assert received["authorization"] == f"Bearer {SIM_KEY}"
    # The provider's documented request options pass to that provider only.
    assert ("anthropic-beta" in received) == (sim == "anthropic")


def test_every_attempt_of_a_chain_forwards_only_its_own_allow_list(gw: Gw):
    gw.sims["openai"].script([{"status": 503}])
    gw.sims["anthropic"].script([{"status": 503}])
    resp = gw.post("gpt-4o", FORBIDDEN)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-model-used"] == "gemini-2-5-flash"
    for sim in ("openai", "anthropic", "google"):
        received = gw.sims[sim].requests()[-1]["headers"]
        _assert_only_allowed(received, frozenset({"authorization"}) if sim == "openai" else frozenset())
    google = gw.sims["google"].requests()[-1]["headers"]
    assert "x-api-key" not in google and "authorization" not in google  # earlier attempts' credentials


def test_a_provider_cannot_mark_its_answer_as_the_gateways_own(gw: Gw):
    # Today: a provider's x-infery-local-reply made a 200 answer free.
    gw.sims["openai"].script([{"headers": {"x-infery-local-reply": "upstream_error"}}])
    resp = gw.post("gpt-4o-mini")
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"]
    assert Decimal(resp.headers["x-credits-used"]) > 0
    assert not [h for h in resp.headers if h.startswith("x-infery")]
    record = eventually(lambda: gw.admin.usage_record(resp.headers["x-request-id"]))
    assert record["status"] == 200 and Decimal(record["credits"]) > 0 and not record["error_code"]


def test_a_provider_cannot_claim_another_model_served(gw: Gw):
    gw.sims["openai"].script([{"headers": {"x-infery-served": "claude-sonnet-4-5"}}])
    resp = gw.post("gpt-4o-mini")
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-model-used"] == "gpt-4o-mini"
    assert "x-fallback-from" not in resp.headers
    assert not [h for h in resp.headers if h.startswith("x-infery")]


def test_a_chain_target_cannot_claim_another_target_served(gw: Gw):
    gw.sims["openai"].script([{"headers": {"x-infery-served": "gemini-2-5-flash"}}])
    resp = gw.post("gpt-4o")
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-model-used"] == "gpt-4o"
    assert not [h for h in resp.headers if h.startswith("x-infery")]


# Envoy's router reads these request headers: how many attempts, on which answers, for how long.
# Each is the gateway's to set from the model's route (ext_proc/exchange.py), never a client's.
def _attempts(gw: Gw) -> int:
    return sum(len(sim.requests()) for sim in gw.sims.values())


def test_a_client_cannot_make_a_chain_try_more_providers(gw: Gw):
    for sim in gw.sims.values():
        sim.script([{"status": 503}])
    resp = gw.post("gpt-4o", {"x-envoy-max-retries": "50", "x-envoy-retry-on": "5xx,reset"})
    # Honoured, the 4th attempt (the primary again, its script spent) would have answered 200.
    assert resp.status_code == 503, resp.text
    assert _attempts(gw) == 3


def test_a_client_cannot_give_a_model_without_a_chain_retries(gw: Gw):
    gw.sims["openai"].script([{"status": 503}])
    resp = gw.post("gpt-4o-mini", {"x-envoy-max-retries": "3", "x-envoy-retry-on": "5xx"})
    assert resp.status_code == 503, resp.text
    assert _attempts(gw) == 1


def test_a_client_cannot_add_retry_conditions_to_a_chain(gw: Gw):
    gw.sims["openai"].script([{"status": 429}])  # gpt-4o's chain falls back on 5xx only
    resp = gw.post(
        "gpt-4o",
        {
            "x-envoy-retry-on": "retriable-status-codes,retriable-4xx",
            "x-envoy-retriable-status-codes": "429",
            "x-envoy-max-retries": "2",
        },
    )
    assert resp.status_code == 429, resp.text
    assert _attempts(gw) == 1


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4o"])
@pytest.mark.parametrize(
    "timeouts",
    [
        {
            "x-envoy-upstream-rq-timeout-ms": "50",
            "x-envoy-upstream-rq-per-try-timeout-ms": "50",
            "x-envoy-hedge-on-per-try-timeout": "true",
        },
        # Not among the headers Envoy strips from clients: ext_proc's removal alone stops it.
        # Honoured, each attempt of a chain was cut (a reset) and the next target tried.
        {"x-envoy-upstream-stream-duration-ms": "50"},
    ],
    ids=["request", "stream"],
)
def test_a_client_cannot_cut_the_gateways_timeouts(gw: Gw, model: str, timeouts: dict[str, str]):
    gw.sims["openai"].script([{"action": "hang", "seconds": 0.3}])  # answers after 0.3 s
    resp = gw.post(model, timeouts)
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-model-used"] == model
    assert _attempts(gw) == 1


def test_every_header_ext_proc_removes_or_sets_takes_effect(gw: Gw):
    """Without ``allow_envoy`` in its mutation rules, Envoy silently refused ext_proc's removal of
    the client's x-envoy-* headers (and of Envoy's x-envoy-external-address), counting each
    here: ~10 per request. The chain's own router headers would have been refused the same way."""
    rejected = "http.infery.ext_proc.rejected_header_mutations"
    before = envoy_stat(gw.stack, rejected)
    gw.sims["openai"].script([{"status": 503}])
    chained = gw.post("gpt-4o", {"x-envoy-max-retries": "0", "x-envoy-retry-on": "reset"})
    plain = gw.post("gpt-4o-mini", {"x-envoy-upstream-rq-timeout-ms": "1"})
    assert (chained.status_code, plain.status_code) == (200, 200), (chained.text, plain.text)
    assert chained.headers["x-model-used"] == "claude-sonnet-4-5"
    assert envoy_stat(gw.stack, rejected) == before
