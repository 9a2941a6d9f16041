"""A long-context prompt of megabytes through Envoy and ext_proc, with the OpenAI SDK.

ext_proc takes the request body in as views of its HTTP/2 buffers and sends the rewritten
body back as views of its bytes (ext_proc/h2_grpc/), so this checks that what the provider
receives is the client's prompt, every byte of it, with only the model renamed, and that
the request is answered and charged once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from decimal import Decimal

import pytest

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.e2e.support import SIM_KEY, Admin, Tenant, eventually, new_tenant, start_gateway

PROMPT_BYTES = 8 * 1024 * 1024
MAX_REQUEST_BYTES = 16 * 1024 * 1024


def _prompt(size: int) -> str:
    """Text of ``size`` characters that no slice of repeats elsewhere: a lost, doubled or
    reordered piece of it changes it (each line carries its own number and digest)."""
    lines = []
    total, n = 0, 0
    while total < size:
        line = f"{n:07d} {hashlib.sha256(str(n).encode()).hexdigest()} é ✓\n"
        lines.append(line)
        total += len(line)
        n += 1
    return "".join(lines)[:size]


@pytest.fixture(scope="module")
def roomy_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_gateway(tmp_path_factory.mktemp("large"), INFERY_MAX_REQUEST_BYTES=str(MAX_REQUEST_BYTES))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def roomy_tenant(roomy_gateway: Stack, openai_sim: SimulatorProcess) -> Tenant:
    admin = Admin(roomy_gateway.admin_url)
    admin.provider("sim-large", "openai", openai_sim.base_url, SIM_KEY)
    admin.model("long-context", "sim-large", "gpt-4o-mini")
    return new_tenant(admin, roomy_gateway, "large")


def test_an_8_mb_prompt_reaches_the_provider_intact_and_is_charged_once(
    roomy_gateway: Stack, roomy_tenant: Tenant, openai_sim: SimulatorProcess
) -> None:
    prompt = _prompt(PROMPT_BYTES)
    openai_sim.clear()
    client = roomy_tenant.client(roomy_gateway, timeout=120)
    raw = client.chat.completions.with_raw_response.create(
        model="long-context",
        messages=[{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": prompt}],
    )
    completion = raw.parse()
    assert completion.model == "long-context"
    assert completion.choices[0].message.content  # the simulator echoes the prompt's first words
    assert completion.usage is not None and completion.usage.prompt_tokens > 100_000

    (received,) = [r for r in openai_sim.requests() if r["path"].endswith("/chat/completions")]
    body = received["body"]
    assert body["model"] == "gpt-4o-mini"  # renamed to the provider's model, nothing else changed
    assert body["messages"][0] == {"role": "system", "content": "Answer briefly."}
    sent = body["messages"][1]["content"]
    assert len(sent) == len(prompt) and sent == prompt

    credits = Decimal(raw.headers["x-credits-used"])
    assert credits > 0
    admin = Admin(roomy_gateway.admin_url)
    record = eventually(lambda: admin.usage_record(raw.headers["x-request-id"]))
    assert Decimal(record["credits"]) == credits
    assert record["input_tokens"] == completion.usage.prompt_tokens
    assert record["status"] == 200


def test_a_large_prompt_to_a_chain_reaches_its_fallback_intact_and_is_charged_once(
    roomy_gateway: Stack, roomy_tenant: Tenant, openai_sim: SimulatorProcess
) -> None:
    """A chain's attempt translates the client's body for its own provider (ext_proc/attempt.py)
    and sends a large one back kept aside from its reply (envoy_messages.Spliced), as the
    listener does: the primary fails, the Anthropic fallback gets the whole prompt in its own
    format, and the request is charged once, at the fallback's price."""
    prompt = _prompt(1024 * 1024)
    admin = Admin(roomy_gateway.admin_url)
    with SimulatorProcess("anthropic", api_key=SIM_KEY) as claude:
        admin.provider("sim-large-claude", "anthropic", claude.base_url, SIM_KEY)
        admin.model("long-claude", "sim-large-claude", "claude-sonnet-4-5")
        admin.model("long-chain", "sim-large", "gpt-4o-mini")
        admin.call("PUT", "/routes/long-chain", {"fallbacks": ["long-claude"], "retry_on": ["5xx"]})
        tenant = new_tenant(admin, roomy_gateway, "large-chain")  # after the chain: published in order
        openai_sim.clear()
        openai_sim.script([{"status": 503}])
        try:
            raw = tenant.client(roomy_gateway, timeout=120).chat.completions.with_raw_response.create(
                model="long-chain", messages=[{"role": "user", "content": prompt}]
            )
        finally:
            openai_sim.clear()
        completion = raw.parse()
        assert raw.headers["x-model-used"] == "long-claude" and raw.headers["x-fallback-from"] == "long-chain"
        (received,) = [r for r in claude.requests() if r["path"].endswith("/v1/messages")]
        assert received["body"]["model"] == "claude-sonnet-4-5"
        sent = received["body"]["messages"][0]["content"]
        text = sent if isinstance(sent, str) else "".join(block["text"] for block in sent)
        assert text == prompt

    credits = Decimal(raw.headers["x-credits-used"])
    record = eventually(lambda: admin.usage_record(raw.headers["x-request-id"]))
    assert credits > 0 and Decimal(record["credits"]) == credits
    assert record["model_used"] == "long-claude" and record["status"] == 200
    assert completion.usage is not None and record["input_tokens"] == completion.usage.prompt_tokens
