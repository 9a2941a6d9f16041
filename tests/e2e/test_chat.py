"""Chat completions through Envoy + ext_proc to an OpenAI-format provider, with the OpenAI SDK."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import openai

from infery.stack import Stack
from tests.conformance import assert_openai, assert_openai_sse
from tests.e2e.support import PRICES, Admin, Tenant, eventually

MESSAGES = [{"role": "user", "content": "Say hello to the gateway in a few words please"}]
MILLION = Decimal(1_000_000)


def expected_credits(usage: dict[str, int]) -> Decimal:
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return (
        (usage["prompt_tokens"] - cached) * Decimal(PRICES["input_per_mtok"])
        + cached * Decimal(PRICES["cached_input_per_mtok"])
        + usage["completion_tokens"] * Decimal(PRICES["output_per_mtok"])
    ) / MILLION


def test_non_streamed_chat_is_openai_shaped_and_charged(client: openai.OpenAI, admin: Admin, tenant: Tenant):
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    completion = raw.parse()
    body = json.loads(raw.http_response.content)
    assert_openai(body, "CreateChatCompletionResponse")
    assert completion.choices[0].message.content
    assert raw.headers["x-model-used"] == "gpt-4o-mini"
    assert "x-fallback-from" not in raw.headers
    request_id = raw.headers["x-request-id"]
    credits = Decimal(raw.headers["x-credits-used"])
    assert credits > 0
    assert credits == expected_credits(body["usage"])

    record = eventually(lambda: admin.usage_record(request_id))
    assert Decimal(record["credits"]) == credits
    assert record["input_tokens"] == body["usage"]["prompt_tokens"]
    assert record["output_tokens"] == body["usage"]["completion_tokens"]
    assert record["model_requested"] == record["model_used"] == "gpt-4o-mini"
    assert record["key_id"] == tenant.key_id and record["member_id"] == tenant.member_id
    assert record["status"] == 200 and record["stream"] is False


def _stream_transcript(gateway: Stack, key: str, **body: object) -> tuple[str, list[float]]:
    """The raw SSE text of a streamed chat, and when each body chunk arrived."""
    arrivals: list[float] = []
    parts: list[str] = []
    payload = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, **body}
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/chat/completions",
        json=payload,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-model-used"] == "gpt-4o-mini"
        for text in resp.iter_text():
            arrivals.append(time.monotonic())
            parts.append(text)
    return "".join(parts), arrivals


def test_stream_has_credits_chunk_last_and_usage_only_when_asked(
    gateway: Stack, tenant: Tenant, admin: Admin
):
    text, _ = _stream_transcript(gateway, tenant.key)
    chunks = assert_openai_sse(text)
    # Without include_usage the final finish_reason chunk, held until usage arrived, carries the
    # charge: no chunk has an empty `choices` (SPEC "Streaming (SSE)").
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop" and "credits_used" in last
    assert all(c["choices"] for c in chunks)
    assert last["object"] == "chat.completion.chunk"
    assert last["id"] == chunks[0]["id"]
    assert {c["model"] for c in chunks} == {"gpt-4o-mini"}
    assert not any(c.get("usage") for c in chunks), "usage chunk sent although the client did not ask"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1] if c["choices"])

    text, _ = _stream_transcript(gateway, tenant.key, stream_options={"include_usage": True})
    chunks = assert_openai_sse(text)
    usage_chunk = chunks[-1]  # asked for: last, carrying the charge
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 0
    assert "credits_used" in usage_chunk
    # The credits amount is written as an exact decimal number.
    raw_amount = text.rsplit('"credits_used":', 1)[1].split("}", 1)[0]
    assert Decimal(raw_amount) == expected_credits(usage_chunk["usage"])


def test_sdk_stream_exposes_credits_and_usage_record_matches(client: openai.OpenAI, admin: Admin):
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    usage = chunks[-1].usage  # OpenAI's documented pattern: the last chunk has the usage
    assert usage is not None
    credits = chunks[-1].model_extra["credits_used"]
    assert Decimal(str(credits)) == expected_credits(usage.model_dump())
    request_id = stream.response.headers["x-request-id"]
    record = eventually(lambda: admin.usage_record(request_id))
    assert Decimal(record["credits"]) == Decimal(str(credits))
    assert record["stream"] is True and record["output_tokens"] == usage.completion_tokens
    assert record["ttft_ms"] > 0


def test_stream_arrives_incrementally(gateway: Stack, tenant: Tenant, openai_sim):
    openai_sim.script([{"chunk_delay_ms": 150}])
    start = time.monotonic()
    text, arrivals = _stream_transcript(gateway, tenant.key)
    chunks = assert_openai_sse(text)
    content_chunks = [c for c in chunks if c["choices"]]
    assert len(content_chunks) >= 5
    # The provider paces chunks 150 ms apart: the first one must reach the client
    # long before the provider has sent the last one.
    provider_duration = 0.150 * (len(content_chunks) - 1)
    assert arrivals[0] - start < provider_duration / 2, (arrivals[0] - start, provider_duration)
    assert arrivals[-1] - arrivals[0] > provider_duration / 2


def test_provider_account_headers_do_not_reach_the_client(client: openai.OpenAI, openai_sim):
    openai_sim.script(
        [
            {
                "headers": {
                    "openai-organization": "org-gateway-operator",
                    "x-ratelimit-limit-requests": "10000",
                    "set-cookie": "__cf_bm=secret",
                    "x-request-id": "req_provider",
                }
            }
        ]
    )
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert "openai-organization" not in raw.headers and "set-cookie" not in raw.headers
    assert "x-ratelimit-limit-requests" not in raw.headers  # an unlimited workspace has no limits to show
    assert raw.headers["x-request-id"] != "req_provider"


def test_a_client_cannot_choose_its_request_id(gateway: Stack, tenant: Tenant, admin: Admin):
    """The request id keys the usage record: a client reusing one must not erase a record."""
    ids = []
    for _ in range(2):
        resp = httpx.post(
            f"{gateway.base_url}/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES},
            headers={"authorization": f"Bearer {tenant.key}", "x-request-id": "spoofed-123"},
            timeout=30,
        )
        assert resp.status_code == 200
        ids.append(resp.headers["x-request-id"])
    assert "spoofed-123" not in ids and ids[0] != ids[1]
    for request_id in ids:
        eventually(lambda request_id=request_id: admin.usage_record(request_id))
