"""What was served is charged, through a real Envoy: abandoned and cut streams, answers without
usage, usage a provider cannot mean, and a provider event that never ends.

Each charge is proven by behaviour as well as by the record: a workspace whose budget the
request exhausts is refused its next request (429 ``insufficient_quota``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.e2e.support import PRICES, SIM_KEY, Admin, Tenant, eventually, new_tenant, start_gateway

SLUGS = {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5", "google": "gemini-2-5-flash"}
UPSTREAM = {
    "openai": "gpt-4o-mini-2024-07-18",
    "anthropic": "claude-sonnet-4-5-20250929",
    "google": "gemini-2.5-flash",
}
LONG = " ".join(f"word{i}" for i in range(48))  # the simulators echo it back, one chunk a word or so
ASK = [{"role": "user", "content": LONG}]


class Env:
    def __init__(self, stack: Stack, admin: Admin, sims: dict[str, SimulatorProcess]):
        self.stack, self.admin, self.sims = stack, admin, sims

    def tenant(self, **fields: Any) -> Tenant:
        return new_tenant(self.admin, self.stack, f"bill-{uuid.uuid4().hex[:8]}", **fields)

    def record(self, request_id: str) -> dict[str, Any]:
        return eventually(lambda: self.admin.usage_record(request_id), timeout=10)

    def assert_budget_spent(self, tenant: Tenant, kind: str) -> None:
        """The next request is refused for the budget before it reaches the provider.

        The probe is scripted to fail at the provider (400, never charged), so that only the
        request under test can have spent the budget.
        """
        sim = self.sims[kind]

        def refused() -> bool:
            sim.clear()
            sim.script([{"status": 400}])
            r = httpx.post(
                f"{self.stack.base_url}/chat/completions",
                json={"model": SLUGS[kind], "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {tenant.key}"},
                timeout=30,
            )
            return r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"

        try:
            eventually(refused, timeout=5, interval=0.2)
        finally:
            sim.clear()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    with (
        SimulatorProcess("openai", api_key=SIM_KEY) as gpt,
        SimulatorProcess("anthropic", api_key=SIM_KEY) as claude,
        SimulatorProcess("google", api_key=SIM_KEY) as gemini,
    ):
        stack = start_gateway(Path(tmp_path_factory.mktemp("billing")))
        try:
            admin = Admin(stack.admin_url)
            sims = {"openai": gpt, "anthropic": claude, "google": gemini}
            for kind, sim in sims.items():
                admin.provider(kind, kind, sim.base_url, SIM_KEY)
                admin.model(SLUGS[kind], kind, UPSTREAM[kind], PRICES)
            yield Env(stack, admin, sims)
        finally:
            stack.stop()


# A budget far below any charged request: one served token exhausts it.
TINY_BUDGET = {"budget_credits": "0.000000001", "budget_period": "day"}


@pytest.mark.parametrize("kind", SLUGS)
def test_a_stream_the_client_abandons_is_charged_for_what_it_read(env: Env, kind: str) -> None:
    tenant = env.tenant(**TINY_BUDGET)
    env.sims[kind].script([{"chunk_delay_ms": 150}])
    client = tenant.client(env.stack, timeout=30)
    stream = client.chat.completions.create(model=SLUGS[kind], messages=ASK, stream=True)
    read = ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            read += chunk.choices[0].delta.content
        if len(read) > 20:
            break
    stream.close()  # the socket goes away mid-stream
    assert read
    record = env.record(stream.response.headers["x-request-id"])
    assert record["status"] == 499 and record["error_code"] == "stream_interrupted"
    assert record["usage_estimated"] is True
    assert record["input_tokens"] > 0 and record["output_tokens"] >= -(-len(read) // 4)
    assert Decimal(record["credits"]) > 0
    env.assert_budget_spent(tenant, kind)


@pytest.mark.parametrize("stream", [False, True], ids=["buffered", "streamed"])
@pytest.mark.parametrize("kind", SLUGS)
def test_an_answer_without_usage_is_charged_from_the_estimate(env: Env, kind: str, stream: bool) -> None:
    tenant = env.tenant(**TINY_BUDGET)
    env.sims[kind].script([{"action": "no_usage"}])
    client = tenant.client(env.stack, timeout=30)
    if stream:
        chunks = list(client.chat.completions.create(model=SLUGS[kind], messages=ASK, stream=True))
        credits = chunks[-1].model_extra.get("credits_used")
        request_id = None
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        raw = client.chat.completions.with_raw_response.create(model=SLUGS[kind], messages=ASK)
        credits = raw.headers["x-credits-used"]
        request_id = raw.headers["x-request-id"]
        text = raw.parse().choices[0].message.content or ""
    assert text and Decimal(str(credits)) > 0
    if request_id is not None:
        record = env.record(request_id)
        assert record["usage_estimated"] is True and record["credits"] == credits
        assert record["output_tokens"] == -(-len(text) // 4)
    env.assert_budget_spent(tenant, kind)


@pytest.mark.parametrize(
    ("usage", "why"),
    [
        ({"prompt_tokens": -1e12}, "is negative"),
        ({"prompt_tokens": "abc"}, "is not a number"),
        ({"completion_tokens": 2.5}, "is not an integer"),
        ({"completion_tokens": 10**13}, "is over"),
    ],
)
def test_usage_a_provider_cannot_mean_is_not_charged_as_given(env: Env, usage: dict, why: str) -> None:
    tenant = env.tenant()
    env.sims["openai"].script([{"usage": usage}])
    raw = tenant.client(env.stack).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=ASK
    )
    assert raw.status_code == 200
    credits = Decimal(raw.headers["x-credits-used"])
    assert 0 < credits < Decimal("0.001")  # a few hundred tokens, not -1000000 or a fortune
    record = env.record(raw.headers["x-request-id"])
    assert record["usage_estimated"] is True and why in record["usage_rejected"]
    assert Decimal(record["credits"]) == credits


def test_a_never_ending_event_is_cut_with_an_error_and_charged(env: Env) -> None:
    tenant = env.tenant(**TINY_BUDGET)
    # Paced as a provider writes: 4 events, then one of 16 MiB in 64 KiB pieces, 5 ms apart.
    endless = {"action": "endless_event", "after_chunks": 4, "size": 16 * 1024 * 1024, "chunk_delay_ms": 5}
    env.sims["openai"].script([endless])
    client = tenant.client(env.stack, timeout=60)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, stream=True)
    received = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            received.append(chunk)
    assert "stream event over" in str(err.value)
    assert any(c.choices and c.choices[0].delta.content for c in received)
    record = env.record(stream.response.headers["x-request-id"])
    assert record["error_code"] == "upstream_error" and record["usage_estimated"] is True
    assert Decimal(record["credits"]) > 0
    env.assert_budget_spent(tenant, "openai")


def test_an_event_bigger_than_the_buffer_in_one_burst_still_ends_with_the_error_event(env: Env) -> None:
    """The headers and 16 MiB of one event at once, before ext_proc has read the headers: Envoy
    answered a plain 500 (no envelope, no usage error) about every other time; now it stops
    reading the provider at its buffer meanwhile, and the stream ends with the error event."""
    tenant = env.tenant()
    client = tenant.client(env.stack, timeout=60)
    burst = {"action": "endless_event", "after_chunks": 0, "size": 16 * 1024 * 1024, "chunk_delay_ms": 0}
    for _ in range(6):  # a race: each try alone gave Envoy's 500 about half the time
        env.sims["openai"].script([burst])
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, stream=True)
        with pytest.raises(openai.APIError) as err:
            list(stream)
        assert "stream event over" in str(err.value)
        record = env.record(stream.response.headers["x-request-id"])
        assert record["status"] == 200 and record["error_code"] == "upstream_error"


def test_an_answer_over_the_buffer_limit_is_the_error_envelope_and_recorded(env: Env) -> None:
    """A non-streamed answer larger than the gateway buffers (INFERY_MAX_REQUEST_BYTES): Envoy's
    plain 500 before, with a 200 usage record; now 502 upstream_error, recorded as such."""
    tenant = env.tenant()
    env.sims["openai"].script([{"answer_bytes": 2 * 1024 * 1024}])
    with pytest.raises(openai.APIStatusError) as err:
        tenant.client(env.stack, timeout=60).chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert err.value.status_code == 502 and err.value.code == "upstream_error"
    assert "larger than" in err.value.message
    record = env.record(err.value.response.headers["x-request-id"])
    assert record["status"] == 502 and record["error_code"] == "upstream_error"
    assert Decimal(record["credits"]) == 0  # nothing reached the client


def test_a_stream_the_provider_cuts_is_charged(env: Env) -> None:
    tenant = env.tenant(**TINY_BUDGET)
    env.sims["anthropic"].script([{"action": "cut_stream", "after_chunks": 6, "chunk_delay_ms": 50}])
    client = tenant.client(env.stack, timeout=30)
    stream = client.chat.completions.create(model="claude-sonnet-4-5", messages=ASK, stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    record = env.record(stream.response.headers["x-request-id"])
    assert record["usage_estimated"] is True and Decimal(record["credits"]) > 0
    env.assert_budget_spent(tenant, "anthropic")


# ------------------------------------------------ what the client is told (SPEC "Streaming (SSE)")


def _raw_stream(env: Env, tenant: Tenant, body: dict[str, Any], **headers: str) -> tuple[str, str]:
    """A stream's text as sent, and its request id."""
    with httpx.stream(
        "POST",
        f"{env.stack.base_url}/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {tenant.key}", **headers},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200, resp.read()
        return resp.read().decode(), resp.headers["x-request-id"]


def _last_event(text: str) -> dict[str, Any]:
    events = [e for e in text.split("\n\n") if e.strip()]
    assert events[-1] == "data: [DONE]"
    last: dict[str, Any] = json.loads(events[-2].removeprefix("data: "))
    return last


def _written_credits(text: str) -> str:
    """``credits_used`` as written on the wire: its exact digits."""
    return text.rsplit('"credits_used":', 1)[1].split("}", 1)[0]


@pytest.mark.parametrize("kind", SLUGS)
def test_the_tutorial_loop_meets_no_empty_choices_and_the_final_chunk_carries_credits(
    env: Env, kind: str
) -> None:
    tenant = env.tenant()
    stream = tenant.client(env.stack).chat.completions.create(model=SLUGS[kind], messages=ASK, stream=True)
    printed = []
    for chunk in stream:
        printed.append(chunk.choices[0].delta.content or "")  # OpenAI's tutorial loop: no IndexError
    assert "".join(printed)
    assert chunk.choices[0].finish_reason == "stop" and chunk.model_extra["credits_used"] > 0
    text, request_id = _raw_stream(env, tenant, {"model": SLUGS[kind], "messages": ASK, "stream": True})
    last = _last_event(text)
    assert last["choices"][0]["finish_reason"] == "stop" and last.get("usage") is None
    record = env.record(request_id)
    assert _written_credits(text) == record["credits"]  # the charge's exact decimal digits
    assert Decimal(record["credits"]) > 0


@pytest.mark.parametrize("kind", SLUGS)
def test_with_include_usage_the_usage_chunk_is_last_and_carries_credits(env: Env, kind: str) -> None:
    tenant = env.tenant()
    body = {"model": SLUGS[kind], "messages": ASK, "stream": True, "stream_options": {"include_usage": True}}
    stream = tenant.client(env.stack).chat.completions.create(**body)
    chunks = list(stream)
    chunk = chunks[-1]  # after the loop
    assert chunk.usage is not None and chunk.usage.completion_tokens > 0  # OpenAI's usage-after-the-loop
    assert chunk.choices == [] and chunk.model_extra["credits_used"] > 0
    text, request_id = _raw_stream(env, tenant, body)
    last = _last_event(text)
    assert last["choices"] == [] and last["usage"]["prompt_tokens"] > 0
    events = [json.loads(e.removeprefix("data: ")) for e in text.split("\n\n")[:-3] if e.strip()]
    assert all(e["choices"] for e in events), "only the usage chunk has empty choices"
    assert _written_credits(text) == env.record(request_id)["credits"]


@pytest.mark.parametrize("kind", SLUGS)
def test_model_is_the_served_slug_everywhere_and_can_be_sent_back(env: Env, kind: str) -> None:
    client = env.tenant().client(env.stack)
    reply = client.chat.completions.create(model=SLUGS[kind], messages=ASK)
    assert reply.model == SLUGS[kind]
    again = client.chat.completions.create(model=reply.model, messages=ASK)
    assert again.model == SLUGS[kind]
    for options in ({}, {"stream_options": {"include_usage": True}}):
        chunks = list(client.chat.completions.create(model=SLUGS[kind], messages=ASK, stream=True, **options))
        assert {c.model for c in chunks} == {SLUGS[kind]}


def test_an_idempotent_replay_repeats_the_final_chunk_with_its_credits(env: Env) -> None:
    tenant = env.tenant()
    body = {"model": "claude-sonnet-4-5", "messages": ASK, "stream": True}
    key = {"idempotency-key": uuid.uuid4().hex}
    first, _ = _raw_stream(env, tenant, body, **key)
    replayed, _ = _raw_stream(env, tenant, body, **key)
    assert replayed == first
    assert _last_event(replayed)["choices"][0]["finish_reason"] == "stop" and _written_credits(replayed)


def test_the_error_event_is_the_last_chunk_and_carries_the_charge(env: Env) -> None:
    tenant = env.tenant()
    endless = {"action": "endless_event", "after_chunks": 4, "size": 8 * 1024 * 1024, "chunk_delay_ms": 5}
    env.sims["google"].script([endless])
    text, request_id = _raw_stream(
        env, tenant, {"model": "gemini-2-5-flash", "messages": ASK, "stream": True}
    )
    last = _last_event(text)
    assert last["error"]["code"] == "upstream_error"
    record = env.record(request_id)
    assert _written_credits(text) == record["credits"] and Decimal(record["credits"]) > 0
