"""Attacks on the Responses and Messages APIs: conversation state and the charge, through Envoy.

- a revoked key's kept responses: the key is refused everywhere; the responses stay the
  workspace's (OpenAI scopes them to the project, not the key), so its other keys continue them;
- a history grown past the request limit by ``previous_response_id`` is refused (413) before it
  is built, and nothing goes upstream;
- usage a provider cannot mean (negative, not an integer) is never charged as given, on the
  pass-through and on translated providers, on both APIs.

Another workspace's response id (404 for GET, DELETE, input_items and previous_response_id) is
tests/e2e/test_responses_api.py::test_another_workspaces_response_is_not_found.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.e2e.support import MAX_REQUEST_BYTES, Admin, Tenant, eventually, new_tenant


@pytest.fixture
def tenant(admin: Admin, gateway: Stack, three_formats: dict[str, SimulatorProcess]) -> Tenant:
    return new_tenant(admin, gateway, f"resp-attack-{uuid.uuid4().hex[:8]}")


def test_a_revoked_keys_responses_stay_the_workspaces_and_the_key_is_refused(
    admin: Admin, gateway: Stack, tenant: Tenant
):
    revoked = tenant.client(gateway)
    first = revoked.responses.create(model="claude-sonnet-4-5", input="My name is Ada")
    second_key = admin.key(tenant.workspace, tenant.member_id, name="second")
    admin.call("DELETE", f"/workspaces/{tenant.workspace}/keys/{tenant.key_id}")

    def refused() -> bool:
        try:
            revoked.responses.retrieve(first.id)
        except openai.AuthenticationError as err:
            return err.code == "invalid_api_key"
        return False

    eventually(refused, timeout=5)
    for call in (
        lambda: revoked.responses.create(
            model="claude-sonnet-4-5", input="again", previous_response_id=first.id
        ),
        lambda: revoked.responses.input_items.list(first.id),
        lambda: revoked.responses.delete(first.id),
    ):
        with pytest.raises(openai.AuthenticationError):
            call()
    other = openai.OpenAI(base_url=gateway.base_url, api_key=second_key["key"], max_retries=0)
    eventually(lambda: other.models.list() is not None, timeout=5)
    follow_up = other.responses.create(
        model="claude-sonnet-4-5", input="What is my name?", previous_response_id=first.id
    )
    assert follow_up.status == "completed"


def test_a_history_past_the_request_limit_is_refused_not_sent(
    gateway: Stack, tenant: Tenant, three_formats: dict[str, SimulatorProcess]
):
    """Each turn is under the limit (1 MiB on the test gateways); the conversation it continues
    is not: it is refused before ext_proc builds it (before, ext_proc built the whole history
    into a body twice the limit and handed it to Envoy, whose buffer limit refused it)."""
    client = tenant.client(gateway, timeout=60)
    big = "word " * (MAX_REQUEST_BYTES * 6 // 10 // 5)  # 60% of the limit
    first = client.responses.create(model="gemini-2-5-flash", input=big)
    sim = three_formats["gemini-2-5-flash"]
    calls = len(sim.requests())
    with pytest.raises(openai.APIStatusError) as refused:
        client.responses.create(model="gemini-2-5-flash", input=big, previous_response_id=first.id)
    # ext_proc's own 413 reaches the client as ext_proc wrote it (Envoy's local-reply mapper
    # rewrites only Envoy's own 413s), naming the parameter that made the request too large.
    assert refused.value.status_code == 413 and refused.value.code == "request_too_large"
    assert refused.value.param == "previous_response_id"
    assert len(sim.requests()) == calls  # nothing went upstream
    small = client.responses.create(model="gemini-2-5-flash", input="and?", previous_response_id=first.id)
    assert small.status == "completed"  # a turn that fits still continues it


@pytest.mark.parametrize(
    ("model", "usage", "why"),
    [
        ("gpt-4o-mini", {"input_tokens": -(10**12)}, "is negative"),
        ("gpt-4o-mini", {"output_tokens": 2.5}, "is not an integer"),
        ("claude-sonnet-4-5", {"input_tokens": -(10**12)}, "is negative"),
        ("gemini-2-5-flash", {"candidatesTokenCount": 10**13}, "is over"),
    ],
)
def test_usage_that_lies_is_not_charged_as_given(
    admin: Admin,
    gateway: Stack,
    tenant: Tenant,
    three_formats: dict[str, SimulatorProcess],
    model: str,
    usage: dict[str, Any],
    why: str,
):
    three_formats[model].script([{"usage": usage}])
    answer = httpx.post(
        f"{gateway.base_url}/responses",
        json={"model": model, "input": "Say something"},
        headers={"authorization": f"Bearer {tenant.key}"},
        timeout=30,
    )
    assert answer.status_code == 200
    credits = Decimal(answer.headers["x-credits-used"])
    assert 0 < credits < Decimal("0.001")  # a few tokens, not a refund nor a fortune
    record = eventually(lambda: admin.usage_record(answer.headers["x-request-id"]), timeout=10)
    assert record["usage_estimated"] is True and why in record["usage_rejected"]
    assert Decimal(record["credits"]) == credits


@pytest.mark.parametrize(
    ("model", "usage", "why"),
    [
        ("claude-sonnet-4-5", {"output_tokens": -5}, "is negative"),  # passed through
        ("gpt-4o-mini", {"prompt_tokens": 2.5}, "is not an integer"),  # translated through chat
        ("gemini-2-5-flash", {"promptTokenCount": -(10**12)}, "is negative"),
    ],
)
def test_usage_that_lies_on_the_messages_api_is_not_charged_as_given(
    admin: Admin,
    gateway: Stack,
    tenant: Tenant,
    three_formats: dict[str, SimulatorProcess],
    model: str,
    usage: dict[str, Any],
    why: str,
):
    three_formats[model].script([{"usage": usage}])
    answer = httpx.post(
        gateway.base_url.removesuffix("/v1") + "/v1/messages",
        json={"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "Say something"}]},
        headers={"x-api-key": tenant.key, "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    credits = Decimal(answer.headers["x-credits-used"])
    assert 0 < credits < Decimal("0.001")
    record = eventually(lambda: admin.usage_record(answer.headers["x-request-id"]), timeout=10)
    assert record["usage_estimated"] is True and why in record["usage_rejected"]
    assert Decimal(record["credits"]) == credits
