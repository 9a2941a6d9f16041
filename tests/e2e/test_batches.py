"""The Batch API end to end: the openai SDK, a real gateway, a batch worker, the simulators.

Every line goes through the Envoy listener as a request of the batch's key; the tests read
what the SDK reads (the batch object, the output and error files) and what the auditor
reads (the usage records, by batch id).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa
from infery_proto import batch_assertion, signed_token
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from infery.stack import Stack, free_port
from simulators.testing import SimulatorProcess
from tests.conformance import assert_openai
from tests.e2e.support import (
    SIM_KEY,
    Admin,
    Tenant,
    eventually,
    new_tenant,
    start_gateway,
    three_provider_catalog,
)
from tests.postgres import fresh_database

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
    # OpenAI's usage: the sums of the lines' usage records, parsed by the SDK's own type.
    assert batch.usage is not None and batch.usage.input_tokens > 0 and batch.usage.output_tokens > 0
    assert batch.usage.total_tokens == batch.usage.input_tokens + batch.usage.output_tokens
    assert batch.usage.model_dump() == tokens_of(gw, batch_id)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch_id)  # nothing left to cancel
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
    assert finished(other, theirs).status == "completed"


def store_url(gw: Stack) -> str:
    return gw.control_plane_env()["INFERY_DATABASE_URL"]


def charges_by_line(gw: Stack, batch_id: str) -> dict[str, list[int]]:
    """custom_id -> the credits (pico) of each usage record of that line, from the store itself."""
    engine = sa.create_engine(store_url(gw).replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT custom_id, credits_pico FROM usage_records WHERE batch_id = :b"),
                {"b": batch_id},
            ).all()
    finally:
        engine.dispose()
    found: dict[str, list[int]] = defaultdict(list)
    for custom_id, pico in rows:
        found[custom_id].append(int(pico))
    return found


def tokens_of(gw: Stack, batch_id: str) -> dict[str, Any]:
    """The sums of the batch's usage records, from the store, in the shape of OpenAI's batch usage."""
    engine = sa.create_engine(store_url(gw).replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as connection:
            row = connection.execute(
                sa.text(
                    "SELECT SUM(input_tokens), SUM(cached_input_tokens), SUM(output_tokens),"
                    " SUM(reasoning_tokens) FROM usage_records WHERE batch_id = :b"
                ),
                {"b": batch_id},
            ).one()
    finally:
        engine.dispose()
    given, cached, output, reasoning = (int(n or 0) for n in row)
    return {
        "input_tokens": given,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": given + output,
    }


def charged_once(gw: Stack, batch: Any, client: openai.OpenAI) -> bool:
    """Every answered line has exactly one charged usage record, no other line has one, and they sum
    to the batch's credits (records at no charge, replays and probes, may be there for any line)."""
    lines = [*read_lines(client, batch.output_file_id), *read_lines(client, batch.error_file_id)]
    answered = {line["custom_id"] for line in lines if line["response"] is not None}
    charges = charges_by_line(gw, batch.id)
    if {custom_id for custom_id, picos in charges.items() if any(picos)} != answered:
        return False
    assert all(sum(1 for pico in picos if pico > 0) <= 1 for picos in charges.values()), dict(charges)
    total = sum(sum(picos) for picos in charges.values())
    credits = client.batches.with_raw_response.retrieve(batch.id).http_response.json()["credits_used"]
    assert Decimal(total) / 10**12 == Decimal(credits)
    return True


def hold(sim: SimulatorProcess, requests: int, seconds: float) -> None:
    """The simulator's next ``requests`` answers wait ``seconds`` each (then answer normally)."""
    sim.clear()
    sim.script([{"action": "hang", "seconds": seconds}] * requests)


def test_cancel_stops_new_lines_lets_those_in_flight_finish_and_writes_both_files(
    client: openai.OpenAI, admin: Admin, gw: Stack, openai_sim: SimulatorProcess
):
    hold(openai_sim, 8, 4)  # the worker's share for one workspace: 8 lines in flight
    batch_id = run_batch(client, [chat_line(f"c{i}", "gpt-4o-mini") for i in range(20)])
    eventually(lambda: len(openai_sim.requests()) == 8, 30)
    cancelling = client.batches.cancel(batch_id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    batch = finished(client, batch_id)
    assert batch.status == "cancelled" and batch.cancelled_at
    assert (batch.request_counts.completed, batch.request_counts.failed) == (8, 12)
    assert len(openai_sim.requests()) == 8  # no line started after the cancel
    assert len(read_lines(client, batch.output_file_id)) == 8
    stopped = read_lines(client, batch.error_file_id)
    assert len(stopped) == 12 and {s["error"]["code"] for s in stopped} == {"batch_cancelled"}
    eventually(lambda: charged_once(gw, batch, client), 15)
    assert client.batches.cancel(batch_id).status == "cancelled"  # again: what it is


def test_a_worker_killed_mid_batch_and_restarted_finishes_with_every_line_charged_once(
    client: openai.OpenAI, gw: Stack, openai_sim: SimulatorProcess
):
    hold(openai_sim, 8, 3)
    batch_id = run_batch(client, [chat_line(f"k{i}", "gpt-4o-mini") for i in range(16)])
    eventually(lambda: len(openai_sim.requests()) == 8, 30)
    worker = gw.processes["batch_worker_0"]
    os.killpg(worker.popen.pid, signal.SIGKILL)  # mid-line: 8 requests in flight, none answered
    worker.popen.wait(10)
    gw.start_batch_worker("batch_worker_0")
    batch = finished(client, batch_id, 90)
    assert batch.status == "completed" and batch.request_counts.completed == 16
    assert len(read_lines(client, batch.output_file_id)) == 16
    eventually(lambda: charged_once(gw, batch, client), 15)


def test_a_cancel_finalized_after_a_dead_workers_lease_ran_out_counts_the_line_it_had_served(
    client: openai.OpenAI, gw: Stack, tenant: Tenant, openai_sim: SimulatorProcess
):
    """A worker died holding two lines: it had sent one (served and charged, its answer never
    written), not the other. The cancel is finalized once their lease has run out: the served line
    is in the output file and the batch's counts and credits (its answer replayed by the line's
    idempotency key, no second charge); the other is cancelled, and a late sending of it (a worker
    that was only slow) is not served."""
    hold(openai_sim, 8, 4)  # the live worker's 8 slots, busy
    batch_id = run_batch(client, [chat_line(f"d{i}", "gpt-4o-mini") for i in range(20)])
    eventually(lambda: len(openai_sim.requests()) == 8, 30)
    engine = sa.create_engine(store_url(gw))
    with engine.begin() as connection:  # lines 19 and 20 (d18, d19), claimed by a worker that dies
        taken = connection.execute(
            sa.text(
                "UPDATE batch_lines SET state = 'leased', lease_owner = 'dead-worker', attempts = 1,"
                " lease_until_ms = :until WHERE batch_id = :b AND line_no IN (19, 20) AND state = 'pending'"
            ),
            {"b": batch_id, "until": int(time.time() * 1000) + 3000},
        )
        assert taken.rowcount == 2
        requests = dict(
            connection.execute(
                sa.text("SELECT custom_id, request FROM batch_lines WHERE batch_id = :b AND line_no >= 19"),
                {"b": batch_id},
            ).all()
        )
    engine.dispose()

    def send_as_worker(custom_id: str) -> httpx.Response:
        return httpx.post(
            f"http://127.0.0.1:{gw.ports.listen}{CHAT}",
            content=requests[custom_id],
            headers={
                batch_assertion.HEADER: line_credential(gw, tenant, batch_id, custom_id),
                "content-type": "application/json",
            },
            timeout=30,
        )

    served = send_as_worker("d18")  # what the worker sent before it died: served, charged
    assert served.status_code == 200 and Decimal(served.headers["x-credits-used"]) > 0
    assert client.batches.cancel(batch_id).status == "cancelling"
    batch = finished(client, batch_id, 60)
    assert batch.status == "cancelled"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (9, 11)
    outputs = {line["custom_id"]: line for line in read_lines(client, batch.output_file_id)}
    assert len(outputs) == 9
    assert ChatCompletion.model_validate(outputs["d18"]["response"]["body"]).id == served.json()["id"]
    stopped = {line["custom_id"]: line for line in read_lines(client, batch.error_file_id)}
    assert len(stopped) == 11 and stopped["d19"]["error"]["code"] == "batch_cancelled"
    eventually(lambda: charged_once(gw, batch, client), 15)
    late = send_as_worker("d19")  # the worker was only slow: its line is not served now
    assert late.status_code == 404 and late.json()["error"]["code"] == "batch_line_not_sent"
    assert len(openai_sim.requests()) == 9  # the 8, and d18 once: nothing after the cancel
    eventually(lambda: charged_once(gw, batch, client), 15)


def test_a_batch_past_its_window_expires_keeping_the_lines_that_finished(
    client: openai.OpenAI, gw: Stack, openai_sim: SimulatorProcess
):
    hold(openai_sim, 8, 3)
    batch_id = run_batch(client, [chat_line(f"x{i}", "gpt-4o-mini") for i in range(20)])
    eventually(lambda: len(openai_sim.requests()) == 8, 30)
    engine = sa.create_engine(store_url(gw))
    with engine.begin() as connection:  # the 24 h window, run out now
        connection.execute(sa.text("UPDATE batches SET expires_at = 0 WHERE id = :b"), {"b": batch_id})
    engine.dispose()
    batch = finished(client, batch_id)
    assert batch.status == "expired" and batch.expired_at
    assert len(openai_sim.requests()) == 8  # nothing started past the window
    assert (batch.request_counts.completed, batch.request_counts.failed) == (8, 12)
    assert len(read_lines(client, batch.output_file_id)) == 8
    left = read_lines(client, batch.error_file_id)
    assert len(left) == 12 and {line["error"]["code"] for line in left} == {"batch_expired"}
    eventually(lambda: charged_once(gw, batch, client), 15)


def line_credential(
    gw: Stack, tenant: Tenant, batch_id: str, custom_id: str, key: bytes | None = None
) -> str:
    engine = sa.create_engine(store_url(gw))
    with engine.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT value FROM settings WHERE key = 'batch_line_key'")
        ).scalar()
    engine.dispose()
    line = batch_assertion.BatchLine(
        eventually(lambda: admin_workspace_id(gw, tenant)),
        tenant.key_id,
        tenant.member_id,
        batch_id,
        custom_id,
        CHAT,
    )
    return batch_assertion.sign(key if key is not None else bytes.fromhex(stored), line)


def admin_workspace_id(gw: Stack, tenant: Tenant) -> str:
    return str(Admin(gw.admin_url).call("GET", f"/workspaces/{tenant.workspace}")["id"])


def test_a_line_credential_cannot_be_forged_altered_moved_or_charged_twice(
    gw: Stack, tenant: Tenant, openai_sim: SimulatorProcess
):
    body = chat_line("x", "gpt-4o-mini")["body"]
    header = batch_assertion.HEADER

    def post(credential: str, path: str = CHAT, payload: Any = body, **headers: str) -> httpx.Response:
        target = f"http://127.0.0.1:{gw.ports.listen}{path}"
        return httpx.post(target, json=payload, headers={header: credential, **headers}, timeout=30)

    forged = line_credential(gw, tenant, "batch_forged", "x", key=b"k" * 32)
    assert post(forged).status_code == 401
    valid = line_credential(gw, tenant, "batch_attack", "x")
    payload, _, mac = valid.rpartition(".")
    parts = payload.split(".")
    parts[6] = signed_token._b64("y")  # another custom_id, same MAC
    assert post(".".join(parts) + "." + mac).status_code == 401
    assert (
        post(
            valid, path="/v1/embeddings", payload={"model": "text-embedding-3-small", "input": "x"}
        ).status_code
        == 401
    )
    # A client's own key does not make a bad credential good: the credential decides.
    assert post(forged, authorization=f"Bearer {tenant.key}").status_code == 401

    openai_sim.clear()
    first = post(valid)
    assert first.status_code == 200 and Decimal(first.headers["x-credits-used"]) > 0
    sent = openai_sim.requests()[-1]["headers"]
    assert not any(name.lower().startswith("x-infery") for name in sent)  # never reaches a provider
    again = post(valid)  # replayed: the same answer, no second charge
    assert again.headers.get("idempotent-replayed") == "true" and again.json() == first.json()
    assert len(openai_sim.requests()) == 1
    changed = post(valid, payload={**body, "max_tokens": 5})
    assert changed.status_code == 422 and changed.json()["error"]["code"] == "idempotency_key_reused"
    replay_id = again.headers["x-request-id"]
    record = eventually(lambda: Admin(gw.admin_url).usage_record(replay_id), 10)
    assert (
        record["idempotent_replay"]
        and Decimal(record["credits"]) == 0
        and record["batch_id"] == "batch_attack"
    )


def lines_sent(metrics_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("infery_batch_lines_total{") and 'result="completed"' in line
    )


def test_two_workers_on_postgresql_share_one_batch_without_a_duplicate(
    tmp_path_factory: pytest.TempPathFactory, openai_sim: SimulatorProcess
):
    first, second = free_port(), free_port()
    with fresh_database() as database:
        stack = start_gateway(
            tmp_path_factory.mktemp("batches-pg"),
            INFERY_DATABASE_URL=database,
            INFERY_BATCH_METRICS_PORT=str(first),
            **FAST,
        )
        try:
            stack.start_batch_worker("batch_worker_1", {"INFERY_BATCH_METRICS_PORT": str(second)})
            admin = Admin(stack.admin_url)
            admin.provider("openai", "openai", openai_sim.base_url, SIM_KEY)
            admin.model("gpt-4o-mini", "openai", "gpt-4o-mini")
            client = new_tenant(admin, stack, "pg-batcher").client(stack)
            hold(openai_sim, 60, 0.3)  # slow enough that both workers have lines in flight
            lines = [chat_line(f"p{i}", "gpt-4o-mini") for i in range(60)]
            batch = finished(client, run_batch(client, lines), 120)
            assert batch.status == "completed" and batch.request_counts.completed == 60
            assert len(openai_sim.requests()) == 60  # each line sent once
            out = read_lines(client, batch.output_file_id)
            assert sorted(line["custom_id"] for line in out) == sorted(f"p{i}" for i in range(60))
            eventually(lambda: charged_once(stack, batch, client), 15)
            shares = lines_sent(first), lines_sent(second)
            assert min(shares) > 0 and sum(shares) == 60, shares  # both worked, no line twice
        finally:
            stack.stop()
