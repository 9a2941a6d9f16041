"""The Batch API end to end: the openai SDK, a real gateway, a batch worker, the simulators.

Every line goes through the Envoy listener as a request of the batch's key; the tests read
what the SDK reads (the batch object, the output and error files) and what the auditor
reads (the usage records, by batch id).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.conformance import assert_openai
from tests.e2e.support import Admin, Tenant, eventually, new_tenant, start_gateway, three_provider_catalog

# Short leases and polls: a killed worker's lines come back within seconds.
FAST = {"INFERY_BATCH_LEASE_S": "2", "INFERY_BATCH_POLL_S": "0.2"}
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start_gateway(tmp_path_factory.mktemp("batches"), **FAST)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def admin(
    gw: Stack, openai_sim: SimulatorProcess, claude_sim: SimulatorProcess, gemini_sim: SimulatorProcess
) -> Admin:
    admin = Admin(gw.admin_url)
    three_provider_catalog(admin, openai_sim.base_url, claude_sim.base_url, gemini_sim.base_url)
    admin.model(
        "text-embedding-3-small",
        "openai",
        "text-embedding-3-small",
        {"input_per_mtok": "0.02", "output_per_mtok": None, "cached_input_per_mtok": None,
         "per_image": None, "per_audio_second": None, "per_mchar": None},
    )  # fmt: skip
    return admin


@pytest.fixture(scope="module")
def tenant(admin: Admin, gw: Stack) -> Tenant:
    return new_tenant(admin, gw, "batcher")


@pytest.fixture
def client(tenant: Tenant, gw: Stack) -> openai.OpenAI:
    return tenant.client(gw)


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "gw" in request.fixturenames:
        print(request.getfixturevalue("gw").logs())


def chat_line(custom_id: str, model: str, text: str = "Say hello") -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 20}
    return {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}


def upload(client: openai.OpenAI, lines: list[dict[str, Any]] | bytes) -> str:
    data = (
        lines if isinstance(lines, bytes) else b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    )
    return client.files.create(file=("batch.jsonl", data), purpose="batch").id


def run_batch(client: openai.OpenAI, lines: list[dict[str, Any]] | bytes, endpoint: str = CHAT) -> str:
    batch = client.batches.create(
        input_file_id=upload(client, lines), endpoint=endpoint, completion_window="24h"
    )  # type: ignore[arg-type]
    assert batch.status == "validating"
    return batch.id


def finished(client: openai.OpenAI, batch_id: str, timeout: float = 60) -> Any:
    final = ("completed", "failed", "cancelled", "expired")
    return eventually(lambda: (b := client.batches.retrieve(batch_id)).status in final and b, timeout, 0.1)


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).content.splitlines()]


def usage_of(admin: Admin, batch_id: str) -> list[dict[str, Any]]:
    return admin.usage(batch=batch_id)


def charged(admin: Admin, batch_id: str, credits: str, requests: int) -> bool:
    """The usage records of the batch's lines have all arrived and sum to ``credits``."""
    rows = usage_of(admin, batch_id)
    return bool(rows) and rows[0]["requests"] >= requests and Decimal(rows[0]["credits"]) == Decimal(credits)


def test_a_chat_batch_over_three_providers_and_an_embeddings_batch_complete(
    client: openai.OpenAI, admin: Admin, gw: Stack
):
    models = ["gpt-4o-mini", "claude-sonnet-4-5", "gemini-2-5-flash"]
    lines = [chat_line(f"req-{i}", models[i % 3], f"Tell me about {i}") for i in range(9)]
    batch_id = run_batch(client, lines)
    batch = finished(client, batch_id)
    assert batch.status == "completed", batch
    assert (
        batch.request_counts.total == 9
        and batch.request_counts.completed == 9
        and batch.request_counts.failed == 0
    )
    raw = client.batches.with_raw_response.retrieve(batch_id).http_response.json()
    assert_openai(raw, "Batch")
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at and batch.error_file_id is None
    outputs = read_lines(client, batch.output_file_id)
    assert sorted(o["custom_id"] for o in outputs) == sorted(line["custom_id"] for line in lines)
    served = {}
    for out in outputs:
        assert out["id"].startswith("batch_req_") and out["error"] is None
        assert out["response"]["status_code"] == 200 and out["response"]["request_id"]
        completion = ChatCompletion.model_validate(out["response"]["body"])  # the SDK's own type
        served[out["custom_id"]] = completion.model
    assert {served[f"req-{i}"] for i in range(9)} == set(models)
    credits = raw["credits_used"]
    assert Decimal(credits) > 0
    eventually(lambda: charged(admin, batch_id, credits, 9), 15)
    by_batch = {row["group"]: row for row in admin.usage(group_by="batch")}
    assert Decimal(by_batch[batch_id]["credits"]) == Decimal(credits)

    embeddings = [
        {"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "text-embedding-3-small", "input": f"text {i}"}}
        for i in range(3)
    ]  # fmt: skip
    emb = finished(client, run_batch(client, embeddings, "/v1/embeddings"))
    assert emb.status == "completed" and emb.request_counts.completed == 3
    for out in read_lines(client, emb.output_file_id):
        assert len(CreateEmbeddingResponse.model_validate(out["response"]["body"]).data) == 1
    emb_credits = client.batches.with_raw_response.retrieve(emb.id).http_response.json()["credits_used"]
    eventually(lambda: charged(admin, emb.id, emb_credits, 3), 15)


def test_a_malformed_file_fails_with_line_numbers_and_charges_nothing(client: openai.OpenAI, admin: Admin):
    good = json.dumps(chat_line("a", "gpt-4o-mini")).encode()
    data = b"\n".join(
        [
            good,
            b"{not json",
            json.dumps(chat_line("a", "gpt-4o-mini")).encode(),  # custom_id again
            json.dumps({**chat_line("c", "gpt-4o-mini"), "url": "/v1/embeddings"}).encode(),
            json.dumps(
                {"custom_id": "d", "method": "POST", "url": CHAT, "body": {"model": "gpt-4o-mini"}}
            ).encode(),
        ]
    )
    batch = finished(client, run_batch(client, data))
    assert batch.status == "failed" and batch.failed_at
    errors = [(e.line, e.code) for e in batch.errors.data]
    assert errors == [
        (2, "invalid_json_line"),
        (3, "duplicate_custom_id"),
        (4, "mismatched_endpoint"),
        (5, "invalid_body"),
    ]
    assert batch.output_file_id is None and batch.error_file_id is None
    assert usage_of(admin, batch.id) == []


def test_a_line_whose_primary_fails_is_served_by_its_fallback(
    client: openai.OpenAI, admin: Admin, openai_sim: SimulatorProcess
):
    openai_sim.script([{"status": 503}])  # gpt-4o's primary, once; its chain goes on to Claude
    batch = finished(client, run_batch(client, [chat_line("only", "gpt-4o")]))
    assert batch.status == "completed"
    (out,) = read_lines(client, batch.output_file_id)
    assert out["response"]["status_code"] == 200
    assert out["response"]["body"]["model"] == "claude-sonnet-4-5"
    record = admin.usage_record(out["response"]["request_id"])
    assert (
        record["fallback_from"] == "gpt-4o"
        and record["batch_id"] == batch.id
        and record["custom_id"] == "only"
    )


def test_a_model_the_workspace_may_not_use_goes_to_the_error_file(admin: Admin, gw: Stack):
    tenant = new_tenant(admin, gw, "batch-restricted", allowed_models=["gpt-4o-mini"])
    client = tenant.client(gw)
    batch = finished(
        client, run_batch(client, [chat_line("ok", "gpt-4o-mini"), chat_line("no", "claude-sonnet-4-5")])
    )
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 1)
    (ok,) = read_lines(client, batch.output_file_id)
    (refused,) = read_lines(client, batch.error_file_id)
    assert ok["custom_id"] == "ok" and refused["custom_id"] == "no"
    assert refused["response"] is None and refused["error"]["code"] == "model_not_allowed"
    eventually(lambda: usage_of(admin, batch.id) and usage_of(admin, batch.id)[0]["requests"] == 1, 15)


def test_another_workspaces_batch_is_not_found(client: openai.OpenAI, admin: Admin, gw: Stack):
    other = new_tenant(admin, gw, "batch-other").client(gw)
    theirs = run_batch(other, [chat_line("x", "gpt-4o-mini")])
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve(theirs)
    with pytest.raises(openai.NotFoundError):
        client.batches.cancel(theirs)
    assert theirs not in {b.id for b in client.batches.list()}
