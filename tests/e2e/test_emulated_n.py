"""``n > 1`` on chat for providers that answer one choice per call (Anthropic; Gemini above its 8
candidates), through Envoy with the openai SDK: the gateway asks its own listener for the other
choices and merges them (ext_proc/extra_choices.py).

Each choice is a provider call and a request of its own, charged once with its own usage
record: the workspace's usage (a fresh workspace per test) must hold exactly n requests whose
credits add up to the ``x-credits-used`` (or ``credits_used``) the client got.
"""

from __future__ import annotations

import itertools
import json
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from infery_proto import signed_token, wire

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests.conformance import assert_openai
from tests.e2e.support import Admin, Tenant, eventually, new_tenant

MESSAGES: list[Any] = [{"role": "user", "content": "Tell me a short story about a lighthouse keeper."}]
# (slug, n): Anthropic has no n; Gemini gives up to 8 candidates in one call.
EMULATED = pytest.mark.parametrize("slug,n", [("claude-sonnet-4-5", 3), ("gemini-2-5-flash", 10)])
_names = itertools.count()


@pytest.fixture
def tenant(admin: Admin, gateway: Stack, three_formats: dict[str, SimulatorProcess]) -> Tenant:
    return new_tenant(admin, gateway, f"extra-choices-{next(_names)}")


@pytest.fixture
def client(tenant: Tenant, gateway: Stack) -> openai.OpenAI:
    return tenant.client(gateway)


def _charged(admin: Admin, tenant: Tenant, requests: int) -> Decimal:
    """The workspace's credits once its ``requests`` usage records have all arrived."""

    def arrived() -> list[dict[str, Any]] | None:
        rows = admin.usage(workspace=tenant.workspace, group_by="model")
        return rows if sum(row["requests"] for row in rows) == requests else None

    rows = eventually(arrived, timeout=10)
    return sum((Decimal(row["credits"]) for row in rows), Decimal(0))


@EMULATED
def test_n_choices_in_one_answer_usage_summed_and_each_charged_once(
    client: openai.OpenAI,
    admin: Admin,
    tenant: Tenant,
    three_formats: dict[str, SimulatorProcess],
    slug: str,
    n: int,
):
    sim = three_formats[slug]
    calls_before = len(sim.requests())
    raw = client.chat.completions.with_raw_response.create(model=slug, messages=MESSAGES, n=n, max_tokens=64)
    reply = raw.parse()
    assert_openai(raw.http_response.json(), "CreateChatCompletionResponse")
    assert [c.index for c in reply.choices] == list(range(n))
    assert all(c.message.content and c.finish_reason for c in reply.choices)
    assert reply.model == slug and raw.headers["x-model-used"] == slug
    assert len(sim.requests()) - calls_before == n  # one provider call per choice
    assert all(r["body"].get("candidateCount", 1) == 1 for r in sim.requests()[calls_before:] if "body" in r)
    assert reply.usage is not None
    # each call was charged the same (same prompt, same canned answer): usage is n times one call's
    one = client.chat.completions.create(model=slug, messages=MESSAGES, max_tokens=64).usage
    assert one is not None
    assert reply.usage.prompt_tokens == n * one.prompt_tokens
    assert reply.usage.completion_tokens == n * one.completion_tokens
    charged = _charged(admin, tenant, n + 1)  # n choices, then the single call
    single = Decimal(raw.headers["x-credits-used"]) / n
    assert Decimal(raw.headers["x-credits-used"]) + single == charged


@EMULATED
@pytest.mark.parametrize("include_usage", [False, True], ids=["plain", "include_usage"])
def test_a_stream_interleaves_every_choice_and_ends_with_the_summed_charge(
    client: openai.OpenAI, admin: Admin, tenant: Tenant, slug: str, n: int, include_usage: bool
):
    options: Any = {"include_usage": True} if include_usage else openai.NOT_GIVEN
    stream = client.chat.completions.create(
        model=slug, messages=MESSAGES, n=n, max_tokens=64, stream=True, stream_options=options
    )
    chunks = list(stream)
    texts: dict[int, str] = {}
    finished: set[int] = set()
    for chunk in chunks:
        assert chunk.model == slug and chunk.id == chunks[0].id
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finished.add(choice.index)
    assert sorted(texts) == list(range(n)) and all(texts.values())
    assert finished == set(range(n))
    last = chunks[-1]
    credits = Decimal(str(last.model_extra["credits_used"]))  # type: ignore[index]
    if include_usage:
        assert last.choices == [] and last.usage is not None
        assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    else:
        assert last.choices and last.usage is None  # the tutorial loop never meets an empty choices
    assert credits == _charged(admin, tenant, n)


def test_n_over_the_emulated_cap_is_refused_before_any_call(
    client: openai.OpenAI, three_formats: dict[str, SimulatorProcess]
):
    sim = three_formats["claude-sonnet-4-5"]
    before = len(sim.requests())
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="claude-sonnet-4-5", messages=MESSAGES, n=17)
    assert (refused.value.code, refused.value.param) == ("invalid_value", "n")
    assert len(sim.requests()) == before


def test_gemini_up_to_8_is_one_call_with_candidates(
    client: openai.OpenAI, three_formats: dict[str, SimulatorProcess]
):
    sim = three_formats["gemini-2-5-flash"]
    before = len(sim.requests())
    reply = client.chat.completions.create(model="gemini-2-5-flash", messages=MESSAGES, n=3)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    sent = sim.requests()[before:]
    assert len(sent) == 1 and sent[0]["body"]["generationConfig"]["candidateCount"] == 3


def test_a_client_that_hangs_up_is_charged_for_what_every_choice_served(
    gateway: Stack,
    admin: Admin,
    tenant: Tenant,
    client: openai.OpenAI,
    three_formats: dict[str, SimulatorProcess],
):
    slug = "claude-sonnet-4-5"
    whole = client.chat.completions.create(model=slug, messages=MESSAGES, max_tokens=64).usage
    assert whole is not None
    sim = three_formats[slug]
    sim.script([{"chunk_delay_ms": 300}] * 3)  # each of the 3 calls streams slowly
    body = {"model": slug, "messages": MESSAGES, "n": 3, "stream": True, "max_tokens": 64}
    headers = {"authorization": f"Bearer {tenant.key}"}
    try:
        with httpx.stream("POST", f"{gateway.base_url}/chat/completions", json=body, headers=headers) as r:
            assert r.status_code == 200
            request_id = r.headers["x-request-id"]
            for line in r.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    break  # some text served: leave
    finally:
        sim.clear()
    record = eventually(lambda: admin.usage_record(request_id), timeout=10)
    assert (record["status"], record["error_code"]) == (499, "stream_interrupted")

    def all_recorded() -> list[dict[str, Any]] | None:
        rows = admin.usage(workspace=tenant.workspace, group_by="model")
        return rows if sum(row["requests"] for row in rows) == 4 else None  # the whole call, then 3

    rows = eventually(all_recorded, timeout=15)
    cut = sum(row["output_tokens"] for row in rows) - whole.completion_tokens
    assert 0 < cut < 3 * whole.completion_tokens  # charged for what was served: something, not all
    assert sum(Decimal(row["credits"]) for row in rows) > 0


def test_each_choice_falls_back_on_its_own_and_model_is_choice_0s(
    admin: Admin, gateway: Stack, three_formats: dict[str, SimulatorProcess]
):
    """One of three calls meets a 503 and is served by the chain's fallback: the answer still has
    three choices; ``model``/``x-model-used`` are choice 0's slug (``x-fallback-from`` when choice 0
    itself fell back); each choice is charged at the price of the model that served it.

    The workspace is made after the chain: the control plane publishes in order, so once its key
    is in force the chain is too. (Made before, the first call could beat the chain to ext_proc
    and go to the provider alone: its 503 reached the client -- CI's flake.)"""
    admin.model("n-chain", "sim-anthropic", "claude-sonnet-4-5-20250929")
    admin.call("PUT", "/routes/n-chain", {"fallbacks": ["gemini-2-5-flash"], "retry_on": ["5xx"]})
    tenant = new_tenant(admin, gateway, f"extra-choices-chain-{next(_names)}")
    sim, fallback = three_formats["claude-sonnet-4-5"], three_formats["gemini-2-5-flash"]
    sim.clear()
    fallback.clear()
    sim.script([{"status": 503}])
    try:
        raw = tenant.client(gateway).chat.completions.with_raw_response.create(
            model="n-chain", messages=MESSAGES, n=3
        )
    finally:
        sim.clear()
    assert len(fallback.requests()) == 1  # the one call that met the 503, and only it
    reply = raw.parse()
    assert [c.index for c in reply.choices] == [0, 1, 2]
    used = raw.headers["x-model-used"]
    assert reply.model == used and used in ("n-chain", "gemini-2-5-flash")
    assert raw.headers.get("x-fallback-from") == ("n-chain" if used == "gemini-2-5-flash" else None)

    def by_model() -> dict[str, int] | None:
        rows = admin.usage(workspace=tenant.workspace, group_by="model")
        counts = {row["group"]: row["requests"] for row in rows}
        return counts if sum(counts.values()) == 3 else None

    counts = eventually(by_model, timeout=10)
    assert counts == {"n-chain": 2, "gemini-2-5-flash": 1}  # the call that fell back, charged as Gemini


def test_an_idempotent_replay_repeats_every_choice_without_a_call(
    client: openai.OpenAI, admin: Admin, tenant: Tenant, three_formats: dict[str, SimulatorProcess]
):
    sim = three_formats["claude-sonnet-4-5"]
    for stream in (False, True):
        key = f"n-replay-{stream}-{next(_names)}"
        body: dict[str, Any] = {"model": "claude-sonnet-4-5", "messages": MESSAGES, "n": 3, "stream": stream}
        first = client.post(
            "/chat/completions",
            cast_to=httpx.Response,
            body=body,
            options={"headers": {"idempotency-key": key}},
        )
        calls = len(sim.requests())
        again = client.post(
            "/chat/completions",
            cast_to=httpx.Response,
            body=body,
            options={"headers": {"idempotency-key": key}},
        )
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == first.content and len(sim.requests()) == calls
        if not stream:
            assert [c["index"] for c in again.json()["choices"]] == [0, 1, 2]
            assert again.headers["x-credits-used"] == first.headers["x-credits-used"]


def test_the_extra_choices_are_charged_to_the_key_that_authenticated_only(
    gateway: Stack, admin: Admin, tenant: Tenant, three_formats: dict[str, SimulatorProcess]
):
    """Attack: a bearer key of this workspace and another workspace's key in ``x-api-key``. The
    bearer token authenticates, and every choice is asked for with it: nothing is charged to
    the other workspace, whichever header a client adds."""
    other = new_tenant(admin, gateway, f"extra-choices-other-{next(_names)}")
    headers = {"authorization": f"Bearer {tenant.key}", "x-api-key": other.key}
    body = {"model": "claude-sonnet-4-5", "messages": MESSAGES, "n": 3}
    answer = httpx.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers, timeout=30)
    assert answer.status_code == 200 and len(answer.json()["choices"]) == 3
    assert Decimal(answer.headers["x-credits-used"]) == _charged(admin, tenant, 3)
    assert admin.usage(workspace=other.workspace, group_by="model") == []
    # A key the listener would refuse is refused before anything is asked for.
    headers = {"authorization": "Bearer inf_not_a_key", "x-api-key": tenant.key}
    refused = httpx.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers, timeout=30)
    assert refused.status_code == 401


def _events(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON events of an SSE answer, ``[DONE]`` left out."""
    lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


def _texts(chunks: list[dict[str, Any]]) -> dict[int, str]:
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.get("choices") or []:
            texts[choice["index"]] = texts.get(choice["index"], "") + (choice["delta"].get("content") or "")
    return texts


def _records(admin: Admin, tenant: Tenant, requests: int) -> list[dict[str, Any]]:
    """The workspace's usage by model once its ``requests`` records have all arrived."""

    def arrived() -> list[dict[str, Any]] | None:
        rows = admin.usage(workspace=tenant.workspace, group_by="model")
        return rows if sum(row["requests"] for row in rows) == requests else None

    return eventually(arrived, timeout=10)


def test_attack_a_limit_that_admits_2_of_3_choices_charges_only_what_the_client_gets(
    admin: Admin, gateway: Stack, three_formats: dict[str, SimulatorProcess]
):
    """n choices are n requests for the limits: with 2 requests a minute, n=3 gets the third
    refused. The client gets the two choices it is charged for (each with its own index), the
    usage and credits of those two, and headers saying one choice was not served and why; it is
    never charged for a choice it did not receive."""
    limited = new_tenant(admin, gateway, f"extra-choices-rpm-{next(_names)}", rpm=2)
    raw = limited.client(gateway).chat.completions.with_raw_response.create(
        model="claude-sonnet-4-5", messages=MESSAGES, n=3
    )
    assert raw.http_response.status_code == 200
    assert_openai(raw.http_response.json(), "CreateChatCompletionResponse")
    reply = raw.parse()
    indexes = [c.index for c in reply.choices]
    assert indexes in ([0, 1], [0, 2])  # choice 0 is admitted first; either other one may be refused
    assert all(c.message.content and c.finish_reason for c in reply.choices)
    assert raw.headers["x-choices-failed"] == "1"
    assert raw.headers["x-choices-error"] == "rate_limit_exceeded"
    rows = _records(admin, limited, 3)  # choice 0, the choice served, the choice refused (at 0)
    assert Decimal(raw.headers["x-credits-used"]) == sum(Decimal(row["credits"]) for row in rows) > 0
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == sum(row["input_tokens"] for row in rows)
    assert reply.usage.completion_tokens == sum(row["output_tokens"] for row in rows)


def test_a_stream_whose_extra_choice_is_refused_gives_what_was_charged_then_the_error(
    admin: Admin, gateway: Stack, three_formats: dict[str, SimulatorProcess]
):
    """Streams keep their rule: the client receives every chunk it is charged for, then the error
    event of the choice that failed, which carries the charge of everything served."""
    limited = new_tenant(admin, gateway, f"extra-choices-rpm-stream-{next(_names)}", rpm=2)
    body = {"model": "claude-sonnet-4-5", "messages": MESSAGES, "n": 3, "stream": True}
    headers = {"authorization": f"Bearer {limited.key}"}
    with httpx.stream("POST", f"{gateway.base_url}/chat/completions", json=body, headers=headers) as r:
        assert r.status_code == 200
        events = _events(r)
    *chunks, last = events
    assert last["error"]["code"] == "rate_limit_exceeded"
    texts = _texts(chunks)
    assert sorted(texts) in ([0, 1], [0, 2]) and all(texts.values())
    finished = {c["index"] for chunk in chunks for c in chunk["choices"] if c.get("finish_reason")}
    assert finished == set(texts)  # both served choices whole
    rows = _records(admin, limited, 3)
    assert Decimal(str(last["credits_used"])) == sum(Decimal(row["credits"]) for row in rows) > 0


@pytest.mark.parametrize(
    "stream,step,code",
    [
        (False, {"status": 500}, "upstream_error"),
        (True, {"status": 500}, "upstream_error"),
        (False, {"action": "reset"}, "upstream_error"),  # Envoy's own reply (a local reply)
        # A bare status, no body: no body message follows, answered from the response headers.
        (False, {"status": 502, "action": "no_body"}, "upstream_error"),
        (True, {"status": 502, "action": "no_body"}, "upstream_error"),
    ],
    ids=["answer", "stream", "answer-reset", "answer-no-body", "stream-no-body"],
)
def test_a_choice_that_fails_leaves_the_others_served_and_charged(
    client: openai.OpenAI,
    admin: Admin,
    tenant: Tenant,
    gateway: Stack,
    three_formats: dict[str, SimulatorProcess],
    stream: bool,
    step: dict[str, Any],
    code: str,
):
    """The first of three calls to reach the provider fails (a 500, or a reset Envoy answers
    itself; no fallback to take): in
    practice choice 0's, which reaches Envoy before the others have been through ext_proc; the
    test reads which one it was. The client gets the two served choices, each with its index,
    charged for those two: choice 0's failure does not hide choices that were paid for.
    ``model`` is then the slug of the first choice served; the client's request's own usage record
    says 200 (what the client got) with choice 0's error code."""
    slug = "claude-sonnet-4-5"
    sim = three_formats[slug]
    sim.clear()
    sim.script([step])
    body = {"model": slug, "messages": MESSAGES, "n": 3, "stream": stream}
    headers = {"authorization": f"Bearer {tenant.key}", "idempotency-key": f"n-partial-{next(_names)}"}
    try:
        r = httpx.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers, timeout=30)
        failed_request = sim.requests()[0]["headers"]["x-request-id"]
    finally:
        sim.clear()
    assert r.status_code == 200
    request_id = r.headers["x-request-id"]
    failed = 0 if failed_request == request_id else None
    rows = _records(admin, tenant, 3)
    charged = sum(Decimal(row["credits"]) for row in rows)
    if stream:
        *chunks, last = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        assert last["error"]["code"] == code
        assert Decimal(str(last["credits_used"])) == charged
        served = sorted(_texts(chunks))
        assert all(chunk["model"] == slug for chunk in chunks)
    else:
        answer = r.json()
        assert_openai(answer, "CreateChatCompletionResponse")
        served = [c["index"] for c in answer["choices"]]
        assert answer["model"] == slug == r.headers["x-model-used"]
        assert r.headers["x-choices-failed"] == "1" and r.headers["x-choices-error"] == code
        assert Decimal(r.headers["x-credits-used"]) == charged
        assert answer["usage"]["completion_tokens"] == sum(row["output_tokens"] for row in rows)
    assert len(served) == 2 and charged > 0
    if failed == 0:
        assert served == [1, 2]
        record = admin.usage_record(request_id)
        assert (record["status"], record["error_code"], record["credits"]) == (200, code, "0")
    else:
        assert served[0] == 0
    if not stream:  # kept for its idempotency key: a retry gets the same choices, charged once
        calls = len(sim.requests())
        again = httpx.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers, timeout=30)
        assert again.headers["idempotent-replayed"] == "true" and again.content == r.content
        assert again.headers["x-choices-failed"] == "1"
        assert again.headers["x-credits-used"] == r.headers["x-credits-used"]
        assert len(sim.requests()) == calls


def test_when_no_choice_is_served_the_client_gets_choice_0s_error_and_nothing_is_charged(
    client: openai.OpenAI, admin: Admin, tenant: Tenant, three_formats: dict[str, SimulatorProcess]
):
    sim = three_formats["claude-sonnet-4-5"]
    sim.clear()
    sim.script([{"status": 500}] * 3)
    try:
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model="claude-sonnet-4-5", messages=MESSAGES, n=3)
    finally:
        sim.clear()
    assert failed.value.code == "upstream_error" and failed.value.status_code == 502
    assert "x-choices-failed" not in failed.value.response.headers
    assert _charged(admin, tenant, 3) == 0


def test_each_choices_usage_record_names_the_clients_request_and_a_client_cannot_forge_it(
    admin: Admin, tenant: Tenant, gateway: Stack, three_formats: dict[str, SimulatorProcess]
):
    """Each extra choice's record has ``parent_request_id``, the request the client made. Attack:
    a client sending the link header itself -- made up, or shaped like the real one and signed
    with a key of its own -- is served as any request, with no parent; the header goes nowhere."""
    sim = three_formats["claude-sonnet-4-5"]
    sim.clear()
    headers = {"authorization": f"Bearer {tenant.key}"}
    body = {"model": "claude-sonnet-4-5", "messages": MESSAGES, "n": 3}
    answer = httpx.post(f"{gateway.base_url}/chat/completions", json=body, headers=headers, timeout=30)
    assert answer.status_code == 200
    client_request = answer.headers["x-request-id"]
    ids = {r["headers"]["x-request-id"] for r in sim.requests()}
    assert client_request in ids and len(ids) == 3
    records = {i: eventually(lambda i=i: admin.usage_record(i), timeout=10) for i in ids}
    assert records[client_request]["parent_request_id"] == ""
    assert all(records[i]["parent_request_id"] == client_request for i in ids - {client_request})
    choices = admin.call("GET", f"/usage/requests/{client_request}/choices")["data"]
    assert {c["request_id"] for c in choices} == ids - {client_request}

    mine = records[client_request]
    link = (client_request, mine["workspace_id"], mine["key_id"])  # all right but the key it is signed with
    forged = signed_token.seal(b"not the gateway's key", "parent-v1", 2**40, link)
    for value in ("01a0000000000000000000000000000f", forged):
        sim.clear()
        one = {"model": "claude-sonnet-4-5", "messages": MESSAGES}
        sent = {**headers, wire.PARENT_REQUEST_HEADER: value}
        r = httpx.post(f"{gateway.base_url}/chat/completions", json=one, headers=sent, timeout=30)
        assert r.status_code == 200
        assert wire.PARENT_REQUEST_HEADER not in sim.requests()[0]["headers"]
        record = eventually(lambda r=r: admin.usage_record(r.headers["x-request-id"]), timeout=10)
        assert record["parent_request_id"] == ""
