"""Fallback chains: Envoy retries down the chain, ext_proc translates each attempt for its provider."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

from infery.stack import Stack, free_port
from simulators.testing import SimulatorProcess
from tests.conformance import assert_openai, assert_openai_sse
from tests.e2e.support import PRICES, SIM_KEY, Admin, Tenant, eventually, new_tenant, start_gateway

HI = [{"role": "user", "content": "Say hello in a few words"}]
CLAUDE_PRICES = {**PRICES, "input_per_mtok": "3", "cached_input_per_mtok": "0.3", "output_per_mtok": "15"}
GEMINI_PRICES = {**PRICES, "input_per_mtok": "0.3", "cached_input_per_mtok": "0.03", "output_per_mtok": "2.5"}
ALL_TRIGGERS = ["5xx", "429", "reset", "connect_failure", "timeout"]
# The chain every test starts from (and that tests changing it put back).
CHAIN = {
    "fallbacks": ["claude-sonnet-4-5", "gemini-2-5-flash"],
    "retry_on": ALL_TRIGGERS,
    "attempt_timeout_s": 2,
    "total_timeout_s": 20,
}


class Chain:
    def __init__(self, stack: Stack, admin: Admin, tenant: Tenant, sims: dict[str, SimulatorProcess]):
        self.stack, self.admin, self.tenant, self.sims = stack, admin, tenant, sims
        self.client = tenant.client(stack, timeout=30)

    def clear(self) -> None:
        for sim in self.sims.values():
            sim.clear()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    with (
        SimulatorProcess("openai", api_key=SIM_KEY) as primary,
        SimulatorProcess("anthropic", api_key=SIM_KEY) as claude,
        SimulatorProcess("google", api_key=SIM_KEY) as gemini,
    ):
        # Scripted failures must reach the primary every time: no ejection here (tested below).
        stack = start_gateway(Path(tmp_path_factory.mktemp("fallback")), INFERY_EJECT_AFTER_FAILURES="1000")
        try:
            admin = Admin(stack.admin_url)
            admin.provider("openai", "openai", primary.base_url, SIM_KEY)
            admin.provider("anthropic", "anthropic", claude.base_url, SIM_KEY)
            admin.provider("google", "google", gemini.base_url, SIM_KEY)
            admin.model("gpt-4o", "openai", "gpt-4o")
            admin.model("claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5", CLAUDE_PRICES)
            admin.model("gemini-2-5-flash", "google", "gemini-2.5-flash", GEMINI_PRICES)
            admin.call("PUT", "/routes/gpt-4o", CHAIN)
            tenant = new_tenant(admin, stack, "fallback")
            yield Chain(stack, admin, tenant, {"openai": primary, "anthropic": claude, "google": gemini})
        finally:
            stack.stop()


def _claude_credits(usage: dict) -> Decimal:
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return (
        (usage["prompt_tokens"] - cached) * Decimal(CLAUDE_PRICES["input_per_mtok"])
        + cached * Decimal(CLAUDE_PRICES["cached_input_per_mtok"])
        + usage["completion_tokens"] * Decimal(CLAUDE_PRICES["output_per_mtok"])
    ) / 1_000_000


@pytest.mark.parametrize(
    "step",
    [
        {"status": 503},
        {"status": 429},
        {"status": 500},
        {"action": "reset"},
        {"action": "hang", "seconds": 5},
    ],
    ids=["503", "429", "500", "reset", "timeout"],
)
def test_each_trigger_falls_back_to_the_next_provider(chain: Chain, step: dict):
    chain.clear()
    chain.sims["openai"].script([step])
    raw = chain.client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    body = json.loads(raw.http_response.content)
    assert_openai(body, "CreateChatCompletionResponse")
    assert raw.headers["x-model-used"] == "claude-sonnet-4-5"
    assert raw.headers["x-fallback-from"] == "gpt-4o"
    assert Decimal(raw.headers["x-credits-used"]) == _claude_credits(body["usage"])
    # The attempt at Claude was translated for Anthropic, not forwarded in OpenAI's shape.
    sent = chain.sims["anthropic"].requests()[-1]
    assert sent["path"] == "/v1/messages" and "messages" in sent["body"] and "x-api-key" in sent["headers"]
    assert "authorization" not in sent["headers"]
    record = eventually(lambda: chain.admin.usage_record(raw.headers["x-request-id"]))
    assert record["model_requested"] == "gpt-4o" and record["model_used"] == "claude-sonnet-4-5"
    assert record["fallback_from"] == "gpt-4o" and record["provider"] == "anthropic"
    assert Decimal(record["credits"]) == Decimal(raw.headers["x-credits-used"])


def test_stream_falls_back_before_the_first_byte(chain: Chain):
    chain.clear()
    chain.sims["openai"].script([{"status": 503}])
    with httpx.stream(
        "POST",
        f"{chain.stack.base_url}/chat/completions",
        json={"model": "gpt-4o", "messages": HI, "stream": True, "stream_options": {"include_usage": True}},
        headers={"authorization": f"Bearer {chain.tenant.key}"},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["x-model-used"] == "claude-sonnet-4-5"
        assert resp.headers["x-fallback-from"] == "gpt-4o"
        text = resp.read().decode()
    chunks = assert_openai_sse(text)
    usage, last = chunks[-1]["usage"], chunks[-1]  # the usage chunk is last and carries the charge
    assert {c["model"] for c in chunks} == {"claude-sonnet-4-5"}  # the fallback that served, in every chunk
    assert "credits_used" in last
    assert Decimal(text.rsplit('"credits_used":', 1)[1].split("}", 1)[0]) == _claude_credits(usage)


def test_two_failures_reach_the_third_target(chain: Chain):
    chain.clear()
    chain.sims["openai"].script([{"status": 503}])
    chain.sims["anthropic"].script([{"status": 529}])
    raw = chain.client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
    assert raw.headers["x-model-used"] == "gemini-2-5-flash"
    assert raw.headers["x-fallback-from"] == "gpt-4o"
    assert_openai(json.loads(raw.http_response.content), "CreateChatCompletionResponse")
    assert ":generateContent" in chain.sims["google"].requests()[-1]["path"]


def test_a_400_from_the_primary_is_not_retried(chain: Chain):
    chain.clear()
    chain.sims["openai"].script([{"status": 400}])
    with pytest.raises(openai.BadRequestError) as err:
        chain.client.chat.completions.create(model="gpt-4o", messages=HI)
    assert err.value.code == "invalid_request"
    assert chain.sims["anthropic"].requests() == [] and chain.sims["google"].requests() == []


def test_every_target_failing_lists_the_attempts(chain: Chain):
    chain.clear()
    for sim in chain.sims.values():
        sim.script([{"status": 503}])
    with pytest.raises(openai.APIStatusError) as err:
        chain.client.chat.completions.create(model="gpt-4o", messages=HI)
    assert err.value.status_code == 503
    assert err.value.code == "upstream_unavailable"
    message = err.value.body["message"]
    assert "gpt-4o" in message and "claude-sonnet-4-5" in message and "gemini-2-5-flash" in message


def test_a_stream_cut_after_the_first_byte_is_not_retried_and_not_silent(chain: Chain):
    """Once bytes reached the client the stream cannot fall back; its end must not look like success.

    Known limit (see README): when the provider *resets* the connection mid-stream,
    Envoy resets the client's stream too, so the client sees a connection error rather
    than a final ``data: {"error": ...}`` event. A provider that ends the body early
    without a reset gets the error event (tests/e2e/test_chat.py).
    """
    chain.clear()
    chain.sims["openai"].script([{"action": "cut_stream", "after_chunks": 2, "chunk_delay_ms": 100}])
    stream = chain.client.chat.completions.create(model="gpt-4o", messages=HI, stream=True)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.append(chunk)
    assert received, "the first chunks reached the client before the cut"
    assert not any(c.model_extra.get("credits_used") is not None for c in received)
    assert chain.sims["anthropic"].requests() == []
    request_id = stream.response.headers["x-request-id"]
    record = eventually(lambda: chain.admin.usage_record(request_id))
    assert record["status"] == 499 and record["error_code"] == "stream_interrupted"


def test_chain_change_takes_effect_within_a_second(chain: Chain):
    chain.clear()
    chain.admin.call(
        "PUT",
        "/routes/gpt-4o",
        {
            "fallbacks": ["gemini-2-5-flash"],
            "retry_on": ALL_TRIGGERS,
            "attempt_timeout_s": 2,
            "total_timeout_s": 20,
        },
    )

    def served_by_gemini() -> bool:
        chain.sims["openai"].script([{"status": 503}])
        raw = chain.client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
        chain.sims["openai"].clear()
        return raw.headers["x-model-used"] == "gemini-2-5-flash"

    try:
        eventually(served_by_gemini, timeout=1.0, interval=0.05)
    finally:
        chain.admin.call("PUT", "/routes/gpt-4o", CHAIN)


def test_a_dead_provider_is_skipped_without_waiting_for_it(tmp_path: Path):
    """Outlier detection: after a few failures the primary is ejected and not even tried."""
    with SimulatorProcess("openai", api_key=SIM_KEY) as backup:
        stack = start_gateway(tmp_path, INFERY_EJECT_AFTER_FAILURES="3")
        try:
            admin = Admin(stack.admin_url)
            admin.provider("dead", "openai", f"http://127.0.0.1:{free_port()}/v1", SIM_KEY)
            admin.provider("backup", "openai", backup.base_url, SIM_KEY)
            admin.model("primary", "dead", "gpt-4o")
            admin.model("secondary", "backup", "gpt-4o-mini")
            admin.call(
                "PUT",
                "/routes/primary",
                {
                    "fallbacks": ["secondary"],
                    "retry_on": ALL_TRIGGERS,
                    "attempt_timeout_s": 5,
                    "total_timeout_s": 20,
                },
            )
            tenant = new_tenant(admin, stack, "outlier")
            client = tenant.client(stack)
            for _ in range(6):
                raw = client.chat.completions.with_raw_response.create(model="primary", messages=HI)
                assert raw.headers["x-model-used"] == "secondary"
            stats = stack.envoy_admin("/stats", filter="outlier_detection.ejections_enforced_total").text
            assert any(line.endswith(tuple("123456789")) for line in stats.splitlines()), stats
            # Ejected: the next requests go straight to the secondary, with no failed attempt first.
            retries_before = _retries(stack)
            for _ in range(5):
                raw = client.chat.completions.with_raw_response.create(model="primary", messages=HI)
                assert raw.headers["x-model-used"] == "secondary"
            assert _retries(stack) == retries_before
        finally:
            stack.stop()


def _retries(stack: Stack) -> int:
    stats = stack.envoy_admin("/stats", filter="upstream_rq_retry$")
    return sum(int(line.rsplit(":", 1)[1]) for line in stats.text.splitlines() if "route_primary" in line)


def test_triggers_are_per_route(chain: Chain):
    """A route that falls back on 429 only returns the primary's 503 as it is."""
    only_429 = {
        "fallbacks": ["claude-sonnet-4-5"],
        "retry_on": ["429"],
        "attempt_timeout_s": 2,
        "total_timeout_s": 20,
    }
    chain.admin.call("PUT", "/routes/gpt-4o", only_429)
    try:

        def not_retried_on_503() -> bool:
            chain.clear()
            chain.sims["openai"].script([{"status": 503}])
            try:
                chain.client.chat.completions.create(model="gpt-4o", messages=HI)
            except openai.APIStatusError as err:
                return err.status_code == 503 and chain.sims["anthropic"].requests() == []
            return False

        eventually(not_retried_on_503, timeout=3, interval=0.1)
        chain.clear()
        chain.sims["openai"].script([{"status": 429}])
        raw = chain.client.chat.completions.with_raw_response.create(model="gpt-4o", messages=HI)
        assert raw.headers["x-model-used"] == "claude-sonnet-4-5"
    finally:
        chain.admin.call("PUT", "/routes/gpt-4o", CHAIN)


def test_a_chain_of_unreachable_targets_lists_them_in_envoys_own_error(tmp_path: Path):
    stack = start_gateway(tmp_path)
    try:
        admin = Admin(stack.admin_url)
        for name in ("gone-a", "gone-b"):
            admin.provider(name, "openai", f"http://127.0.0.1:{free_port()}/v1", SIM_KEY)
        admin.model("first", "gone-a", "gpt-4o")
        admin.model("second", "gone-b", "gpt-4o")
        admin.call(
            "PUT",
            "/routes/first",
            {
                "fallbacks": ["second"],
                "retry_on": ALL_TRIGGERS,
                "attempt_timeout_s": 2,
                "total_timeout_s": 10,
            },
        )
        client = new_tenant(admin, stack, "unreachable").client(stack)
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="first", messages=HI)
        assert err.value.status_code == 503 and err.value.code == "upstream_unavailable"
        assert "first" in err.value.body["message"] and "second" in err.value.body["message"]
        leaked = [name for name in err.value.response.headers if name.startswith("x-infery")]
        assert not leaked, leaked
    finally:
        stack.stop()


def test_a_client_cannot_change_a_chains_timeouts_or_retries(chain: Chain):
    """Envoy's router headers from the client: no per-try timeout, no total one, no retries.
    Honoured, the primary's answer after 5 s would have been served; the chain's own 2 s per
    attempt falls back to the next target."""
    chain.clear()
    chain.sims["openai"].script([{"action": "hang", "seconds": 5}])
    resp = httpx.post(
        f"{chain.stack.base_url}/chat/completions",
        json={"model": "gpt-4o", "messages": HI},
        headers={
            "authorization": f"Bearer {chain.tenant.key}",
            "x-envoy-upstream-rq-per-try-timeout-ms": "0",
            "x-envoy-upstream-rq-timeout-ms": "0",
            "x-envoy-max-retries": "0",
        },
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-model-used"] == "claude-sonnet-4-5"
    assert resp.elapsed.total_seconds() < 4.5
