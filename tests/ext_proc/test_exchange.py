"""The listener exchange on Envoy's message sequence, without Envoy: the stream edge cases.

End-to-end behaviour is covered through a real Envoy in tests/e2e; this drives
the state machine directly for what a simulator cannot easily produce, such as
a provider that ends its SSE body cleanly but early.
"""

from __future__ import annotations

import asyncio
import hashlib
from decimal import Decimal

import orjson
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from infery_proto import batch_assertion
from infery_proto.v1 import config_pb2, usage_pb2
from infery_proto.wire import BATCH_LINE_HEADER, BATCH_RECOVER_HEADER

from ext_proc import config
from ext_proc.exchange import Exchange, Services
from ext_proc.idempotency import Idempotency
from ext_proc.limits import Admission, Limiter
from ext_proc.request_id import new_request_id
from ext_proc.shared_state import MemoryState

KEY = "inf_test-key"


def _config(**workspace: object) -> config.GatewayConfig:
    return config.build(
        [
            config_pb2.Provider(
                name="p", kind="openai", cluster="provider_p", base_path="/v1", host="h", api_key="sk"
            )
        ],
        [
            config_pb2.Model(
                slug="m",
                provider="p",
                upstream_model="up",
                prices=config_pb2.Prices(input_per_mtok="1", output_per_mtok="2"),
            )
        ],
        [config_pb2.Workspace(id="w", name="w", price_multiplier="1", **workspace)],
        [
            config_pb2.ApiKey(
                id="k", key_hash=hashlib.sha256(KEY.encode()).hexdigest(), workspace_id="w", member_id="m"
            )
        ],
        [],
    )


def _headers(pairs: dict[str, str], end: bool = False) -> ep.HttpHeaders:
    return ep.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]
        ),
        end_of_stream=end,
    )


def _chunk(i: int) -> bytes:
    doc = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "up",
        "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def _served(event: bytes) -> bytes:
    return event.replace(b'"model":"up"', b'"model":"m"')


def _finish_chunk() -> bytes:
    doc = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up"}
    choice = {"index": 0, "delta": {}, "finish_reason": "stop"}
    return b"data: " + orjson.dumps({**doc, "choices": [choice]}) + b"\n\n"


@pytest.fixture
def records() -> list[usage_pb2.UsageRecord]:
    return []


async def _streaming_exchange(records: list[usage_pb2.UsageRecord]) -> Exchange:
    state = MemoryState(prefix="t")
    exchange = Exchange(_config(), Services(records.append, Limiter(state), Idempotency(state)))
    exchange.on_request_headers(
        _headers({":path": "/v1/chat/completions", ":method": "POST", "authorization": f"Bearer {KEY}"})
    )
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    reply = await exchange.on_request_body(ep.HttpBody(body=orjson.dumps(body), end_of_stream=True))
    sent = orjson.loads(reply.request_body.response.body_mutation.body)
    assert sent["model"] == "up" and sent["stream_options"] == {"include_usage": True}
    reply = await exchange.on_response_headers(
        _headers({":status": "200", "content-type": "text/event-stream"})
    )
    assert reply.mode_override.response_body_mode == ProcessingMode.STREAMED
    return exchange


async def test_an_answer_over_the_buffer_limit_is_a_502_not_a_charge(records):
    """Past the stream's buffer Envoy sends the first part of a non-streamed answer with
    ``end_of_stream`` false (BUFFERED_PARTIAL): the client gets the envelope, the record says why."""
    state = MemoryState(prefix="t")
    exchange = Exchange(_config(), Services(records.append, Limiter(state), Idempotency(state)))
    exchange.on_request_headers(
        _headers({":path": "/v1/chat/completions", ":method": "POST", "authorization": f"Bearer {KEY}"})
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    await exchange.on_request_body(ep.HttpBody(body=orjson.dumps(body), end_of_stream=True))
    reply = await exchange.on_response_headers(
        _headers({":status": "200", "content-type": "application/json"})
    )
    assert reply.mode_override.response_body_mode == ProcessingMode.BUFFERED_PARTIAL
    reply = await exchange.on_response_body(ep.HttpBody(body=b'{"id":"c1","choices":[{"mess'))
    assert reply.immediate_response.status.code == 502
    assert orjson.loads(reply.immediate_response.body)["error"]["code"] == "upstream_error"
    assert records[0].status == 502 and records[0].error_code == "upstream_error"
    assert records[0].credits == "0"


async def test_a_stream_ending_early_gets_an_error_event_and_done(records):
    exchange = await _streaming_exchange(records)
    first = await exchange.on_response_body(ep.HttpBody(body=_chunk(1)))
    # Passed through as received but for `model`: the slug that served, not the provider's name.
    assert first.response_body.response.body_mutation.body == _served(_chunk(1))
    last = await exchange.on_response_body(ep.HttpBody(body=_chunk(2), end_of_stream=True))
    out = last.response_body.response.body_mutation.body
    events = [e for e in out.split(b"\n\n") if e]
    assert events[0] == _served(_chunk(2)).strip()
    error = orjson.loads(events[1].removeprefix(b"data: "))
    assert error["error"]["code"] == "upstream_error"
    assert events[1].endswith(b'"credits_used":0.000009}')  # the last event before [DONE] carries the charge
    assert events[-1] == b"data: [DONE]"
    assert records[0].status == 200 and records[0].error_code == "upstream_error"
    # What was served is charged all the same, from the estimate: "hi" is 4 + ceil(2/4) = 5
    # prompt tokens, "w1 w2 " ceil(6/4) = 2 output tokens; 5 * 1/M + 2 * 2/M.
    assert records[0].usage_estimated and records[0].credits == "0.000009"
    assert (records[0].input_tokens, records[0].output_tokens) == (5, 2)


async def test_a_complete_stream_gets_the_credits_chunk_before_done(records):
    exchange = await _streaming_exchange(records)
    usage = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "up",
        "choices": [],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
    }
    tail = _chunk(1) + _finish_chunk() + b"data: " + orjson.dumps(usage) + b"\n\ndata: [DONE]\n\n"
    # Split mid-event: the translator must keep the partial tail.
    first = await exchange.on_response_body(ep.HttpBody(body=tail[:50]))
    reply = await exchange.on_response_body(ep.HttpBody(body=tail[50:]))
    out = first.response_body.response.body_mutation.body + reply.response_body.response.body_mutation.body
    events = [e for e in out.split(b"\n\n") if e]
    assert b'"usage"' not in out  # the client did not ask for the usage chunk
    assert events[0] == _served(_chunk(1)).strip()
    # The final finish_reason chunk was held until usage arrived and carries the charge.
    last = orjson.loads(events[-2].removeprefix(b"data: "))
    assert last["choices"][0]["finish_reason"] == "stop" and last["id"] == "c1" and last["model"] == "m"
    assert events[-2].endswith(b'"credits_used":0.002}')  # 1000 * 1/M + 500 * 2/M, exact
    assert events[-1] == b"data: [DONE]" and len(events) == 3
    assert records[0].credits == "0.002" and records[0].output_tokens == 500


async def test_a_client_gone_mid_stream_is_recorded_once(records):
    exchange = await _streaming_exchange(records)
    await exchange.on_response_body(ep.HttpBody(body=_chunk(1)))
    exchange.abort()
    exchange.abort()
    assert len(records) == 1 and records[0].status == 499 and records[0].error_code == "stream_interrupted"


async def test_a_client_gone_mid_stream_is_charged_for_what_it_read(records):
    exchange = await _streaming_exchange(records)
    for i in range(10, 20):  # "w10 " ... "w19 ": 40 characters, 10 tokens
        await exchange.on_response_body(ep.HttpBody(body=_chunk(i)))
    exchange.abort()
    record = records[0]
    assert record.status == 499 and record.usage_estimated and not record.usage_rejected
    assert (record.input_tokens, record.output_tokens) == (5, 10)
    assert record.credits == "0.000025"  # 5 * 1/M + 10 * 2/M


class _SettleLog(Limiter):
    """The real limiter, noting what each admission is settled with."""

    def __init__(self, state: MemoryState) -> None:
        super().__init__(state)
        self.settled: list[tuple[int, Decimal]] = []

    async def settle(self, admission: Admission, actual_tokens: int, credits: Decimal) -> None:
        self.settled.append((actual_tokens, credits))
        await super().settle(admission, actual_tokens, credits)


async def test_an_abandoned_stream_settles_tpm_and_budget_with_what_it_was_charged(records):
    state = MemoryState(prefix="t")
    limiter = _SettleLog(state)
    cfg = _config(tpm=100_000, budget_credits="1", budget_period="day")
    exchange = Exchange(cfg, Services(records.append, limiter, Idempotency(state)))
    exchange.on_request_headers(
        _headers({":path": "/v1/chat/completions", ":method": "POST", "authorization": f"Bearer {KEY}"})
    )
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    await exchange.on_request_body(ep.HttpBody(body=orjson.dumps(body), end_of_stream=True))
    await exchange.on_response_headers(_headers({":status": "200", "content-type": "text/event-stream"}))
    await exchange.on_response_body(ep.HttpBody(body=_chunk(10) + _chunk(11)))
    exchange.abort()
    await asyncio.gather(*exchange._services.background)
    record = records[0]
    assert record.usage_estimated and record.credits == "0.000009"  # 5 in, "w10 w11 " 2 out
    assert limiter.settled == [(record.input_tokens + record.output_tokens, Decimal(record.credits))]


def _usage_chunk(usage: object) -> bytes:
    doc = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up", "choices": []}
    return b"data: " + orjson.dumps({**doc, "usage": usage}) + b"\n\n"


async def test_a_stream_without_usage_is_charged_from_the_estimate(records):
    exchange = await _streaming_exchange(records)
    reply = await exchange.on_response_body(
        ep.HttpBody(body=_chunk(1) + b"data: [DONE]\n\n", end_of_stream=True)
    )
    out = reply.response_body.response.body_mutation.body
    assert b'"credits_used":0.000007}' in out  # 5 prompt tokens * 1/M + ceil(3/4) = 1 output * 2/M
    assert records[0].usage_estimated and records[0].credits == "0.000007" and not records[0].error_code


@pytest.mark.parametrize(
    ("usage", "why"),
    [
        ({"prompt_tokens": -1e12, "completion_tokens": 5}, "prompt_tokens=-1000000000000.0 is negative"),
        ({"prompt_tokens": "abc", "completion_tokens": 5}, "prompt_tokens='abc' is not a number"),
        ({"prompt_tokens": 1, "completion_tokens": 2.5}, "completion_tokens=2.5 is not an integer"),
        ({"prompt_tokens": 1, "completion_tokens": 10**15}, "completion_tokens=1000000000000000 is over"),
    ],
)
async def test_a_streamed_usage_that_cannot_be_true_is_replaced_by_the_estimate(records, usage, why):
    exchange = await _streaming_exchange(records)
    body = _chunk(1) + _usage_chunk(usage) + b"data: [DONE]\n\n"
    reply = await exchange.on_response_body(ep.HttpBody(body=body, end_of_stream=True))
    out = reply.response_body.response.body_mutation.body
    assert b'"credits_used":0.000007}' in out
    record = records[0]
    assert record.usage_estimated and why in record.usage_rejected and record.credits == "0.000007"


async def _buffered_exchange(records: list[usage_pb2.UsageRecord]) -> Exchange:
    state = MemoryState(prefix="t")
    exchange = Exchange(_config(), Services(records.append, Limiter(state), Idempotency(state)))
    exchange.on_request_headers(
        _headers({":path": "/v1/chat/completions", ":method": "POST", "authorization": f"Bearer {KEY}"})
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    await exchange.on_request_body(ep.HttpBody(body=orjson.dumps(body), end_of_stream=True))
    await exchange.on_response_headers(_headers({":status": "200", "content-type": "application/json"}))
    return exchange


def _completion(usage: object | None) -> bytes:
    message = {"role": "assistant", "content": "12345678", "tool_calls": [
        {"id": "t", "type": "function", "function": {"name": "get", "arguments": "{}"}}
    ]}  # fmt: skip
    doc: dict[str, object] = {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "up",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    }
    if usage is not None:
        doc["usage"] = usage
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    ("usage", "rejected"),
    [
        (None, ""),
        ({"prompt_tokens": -1e12, "completion_tokens": 1}, "is negative"),
        ({"prompt_tokens": "abc"}, "abc"),
    ],
)
async def test_an_answer_without_believable_usage_is_charged_from_the_estimate(records, usage, rejected):
    exchange = await _buffered_exchange(records)
    reply = await exchange.on_response_body(ep.HttpBody(body=_completion(usage), end_of_stream=True))
    headers = {
        h.header.key: h.header.raw_value.decode()
        for h in reply.response_body.response.header_mutation.set_headers
    }
    # 5 prompt tokens; "12345678" + "get" + "{}" = 13 characters, 4 tokens: 5 * 1/M + 4 * 2/M
    assert headers["x-credits-used"] == "0.000013"
    record = records[0]
    assert record.status == 200 and record.usage_estimated and record.credits == "0.000013"
    assert (record.input_tokens, record.output_tokens) == (5, 4)
    assert rejected in record.usage_rejected and bool(record.usage_rejected) == bool(rejected)


async def test_a_believable_usage_is_charged_as_given(records):
    exchange = await _buffered_exchange(records)
    usage = {"prompt_tokens": 1000.0, "completion_tokens": 500}  # an integral float is an integer
    await exchange.on_response_body(ep.HttpBody(body=_completion(usage), end_of_stream=True))
    assert records[0].credits == "0.002" and not records[0].usage_estimated and not records[0].usage_rejected


async def test_a_never_ending_event_is_cut_at_the_bound_and_what_was_served_is_charged(records):
    state = MemoryState(prefix="t")
    services = Services(records.append, Limiter(state), Idempotency(state), max_sse_event_bytes=4096)
    exchange = Exchange(_config(), services)
    exchange.on_request_headers(
        _headers({":path": "/v1/chat/completions", ":method": "POST", "authorization": f"Bearer {KEY}"})
    )
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    await exchange.on_request_body(ep.HttpBody(body=orjson.dumps(body), end_of_stream=True))
    await exchange.on_response_headers(_headers({":status": "200", "content-type": "text/event-stream"}))
    await exchange.on_response_body(ep.HttpBody(body=_chunk(1)))
    replies = [await exchange.on_response_body(ep.HttpBody(body=b'data: {"x":"' + b"a" * 1000))]
    while not exchange.finished:
        assert len(replies) < 10, "the event was not cut at 4096 bytes"
        replies.append(await exchange.on_response_body(ep.HttpBody(body=b"a" * 1000)))
    out = replies[-1].response_body.response.body_mutation.body
    events = [e for e in out.split(b"\n\n") if e]
    assert orjson.loads(events[0].removeprefix(b"data: "))["error"]["code"] == "upstream_error"
    assert events[-1] == b"data: [DONE]"
    after = await exchange.on_response_body(ep.HttpBody(body=b"a" * 1000, end_of_stream=True))
    assert after.response_body.response.body_mutation.body == b""  # nothing more reaches the client
    record = records[0]
    assert record.error_code == "upstream_error" and record.usage_estimated
    assert record.credits == "0.000007"  # 5 prompt tokens, "w1 " one output token


async def test_a_provider_error_without_a_body_is_answered_in_full(records):
    state = MemoryState(prefix="t")
    exchange = Exchange(_config(), Services(records.append, Limiter(state), Idempotency(state)))
    exchange.on_request_headers(
        _headers({":path": "/v1/chat/completions", ":method": "POST", "authorization": f"Bearer {KEY}"})
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    await exchange.on_request_body(ep.HttpBody(body=orjson.dumps(body), end_of_stream=True))
    # 503 with content-length: 0 -- no body message will follow.
    reply = await exchange.on_response_headers(_headers({":status": "503", "content-length": "0"}, end=True))
    answer = reply.immediate_response
    assert answer.status.code == 503
    assert orjson.loads(answer.body)["error"]["code"] == "upstream_unavailable"
    assert records[0].status == 503 and records[0].error_code == "upstream_unavailable"


def test_a_rejected_xds_update_does_not_poison_later_ones():
    """Delta xDS: a resource that cannot be built is refused on its own (NACK) and reported by
    readiness; the previous version stays, and later resources still apply."""
    from envoy.service.discovery.v3 import discovery_pb2

    from ext_proc.xds_client import TYPE_PREFIX, ConfigSubscriber

    def response(type_name: str, *resources: object, version: str) -> discovery_pb2.DeltaDiscoveryResponse:
        reply = discovery_pb2.DeltaDiscoveryResponse(
            type_url=TYPE_PREFIX + type_name, system_version_info=version, nonce=version
        )
        for resource in resources:
            name = (
                getattr(resource, "slug", "") or getattr(resource, "id", "") or getattr(resource, "name", "")
            )
            item = reply.resources.add(name=name)
            item.resource.Pack(resource)
        return reply

    subscriber = ConfigSubscriber("127.0.0.1:1", "test")
    good = {
        "Provider": [config_pb2.Provider(name="p", kind="openai", cluster="c")],
        "Model": [config_pb2.Model(slug="m", provider="p", upstream_model="up")],
        "Workspace": [config_pb2.Workspace(id="w", name="w", price_multiplier="1")],
        "Route": [],
        "ApiKey": [],
        "DataPlaneSecret": [config_pb2.DataPlaneSecret(name="d", attempt_grant_key=b"k" * 32)],
    }
    for name, items in good.items():
        assert not subscriber.is_ready()
        assert not subscriber._apply(response(name, *items, version="1")).HasField("error_detail")
    assert subscriber.is_ready()
    assert subscriber.current is not None and subscriber.current.attempt_grant_key == b"k" * 32
    bad = subscriber._apply(
        response("Workspace", config_pb2.Workspace(id="w", price_multiplier="oops"), version="2")
    )
    assert bad.HasField("error_detail")
    assert not subscriber.is_ready() and "'w'" in subscriber.problem
    assert subscriber.current is not None and subscriber.current.workspaces["w"].price_multiplier == 1
    later = subscriber._apply(
        response("Model", config_pb2.Model(slug="m2", provider="p", upstream_model="x"), version="3")
    )
    assert not later.HasField("error_detail")
    assert subscriber.current is not None and "m2" in subscriber.current.models
    fixed = subscriber._apply(
        response("Workspace", config_pb2.Workspace(id="w", price_multiplier="2"), version="4")
    )
    assert not fixed.HasField("error_detail") and subscriber.is_ready()


def _answer_id(reply: ep.ProcessingResponse) -> str:
    headers = reply.immediate_response.headers.set_headers
    return next(h.header.raw_value.decode() for h in headers if h.header.key == "x-request-id")


def test_a_request_answered_in_the_headers_phase_keeps_envoys_id_and_a_metered_one_gets_ours(records):
    state = MemoryState(prefix="t")
    services = Services(records.append, Limiter(state), Idempotency(state))
    envoys = "6f1e3c9a-2b7d-9c51-9a0e-3d2f1b4c5a6e"  # sampled: trace reason 9 in character 14
    refused = Exchange(_config(), services)
    reply = refused.on_request_headers(
        _headers({":path": "/v1/chat/completions", ":method": "POST", "x-request-id": envoys})
    )
    # Refused before the body (no key): Envoy's access log and the client can only have Envoy's id.
    assert reply.immediate_response.status.code == 401 and _answer_id(reply) == refused.request_id == envoys
    # Not one of Envoy's UUIDs (a client's id in Envoy's place, say a gateway id): never taken.
    gateway_like = new_request_id("9")
    other = Exchange(_config(), services)
    reply = other.on_request_headers(
        _headers({":path": "/v1/nowhere", ":method": "POST", "x-request-id": gateway_like})
    )
    assert _answer_id(reply) == other.request_id != gateway_like and len(other.request_id) == 36
    metered = Exchange(_config(), services)
    reply = metered.on_request_headers(
        _headers(
            {
                ":path": "/v1/chat/completions",
                ":method": "POST",
                "authorization": f"Bearer {KEY}",
                "x-request-id": envoys,
            }
        )
    )
    sent = {
        h.header.key: h.header.raw_value.decode()
        for h in reply.request_headers.response.header_mutation.set_headers
    }
    assert sent["x-request-id"] == metered.request_id != envoys and len(metered.request_id) == 36
    # Envoy's trace decision, packed in its id, is in ours (ext_proc/request_id.py).
    assert metered.request_id[14] == "9"


class _KeptStore:
    """A response store holding one kept response of workspace ``w`` (duck-typed ResponseStore)."""

    def __init__(self, kept_input: bytes) -> None:
        from ext_proc.response_store import Kept

        self.kept = Kept(b'{"id":"resp_1","object":"response","output":[]}', kept_input)

    async def find(self, workspace_id: str, response_id: str) -> object:
        return self.kept if (workspace_id, response_id) == ("w", "resp_1") else None


async def test_a_conversation_past_the_request_limit_is_413_before_it_is_built(records):
    """Attack: each turn under the limit, the conversation over it. The gateway must not build the
    whole history into a body (nor send it, nor keep it again): 413 naming previous_response_id."""
    history = orjson.dumps([{"type": "message", "role": "user", "content": "x" * 60_000}])
    state = MemoryState(prefix="t")
    services = Services(records.append, Limiter(state), Idempotency(state), max_buffered_bytes=100_000)
    services.responses = _KeptStore(history)  # type: ignore[assignment]
    for size, expected in ((50_000, 413), (1_000, 0)):
        exchange = Exchange(_config(), services)
        exchange.on_request_headers(
            _headers({":path": "/v1/responses", ":method": "POST", "authorization": f"Bearer {KEY}"})
        )
        body = {"model": "m", "input": "y" * size, "previous_response_id": "resp_1"}
        reply = await exchange.on_request_body(ep.HttpBody(body=orjson.dumps(body), end_of_stream=True))
        if expected:
            assert reply.immediate_response.status.code == expected
            error = orjson.loads(reply.immediate_response.body)["error"]
            assert (error["code"], error["param"]) == ("request_too_large", "previous_response_id")
        else:
            sent = orjson.loads(reply.request_body.response.body_mutation.body)
            assert len(sent["input"]) == 2  # the kept turn, then this one


# -- a batch finalizer's recovery probe (x-infery-batch-recover) ----------------------------

LINE_KEY = b"l" * 32
CHAT_ANSWER = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "up",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
}


def _batch_config() -> config.GatewayConfig:
    secret = config_pb2.DataPlaneSecret(name="d", attempt_grant_key=b"g" * 32, batch_line_key=LINE_KEY)
    return config.build(
        [
            config_pb2.Provider(
                name="p", kind="openai", cluster="provider_p", base_path="/v1", host="h", api_key="sk"
            )
        ],
        [
            config_pb2.Model(
                slug="m", provider="p", upstream_model="up",
                prices=config_pb2.Prices(input_per_mtok="1", output_per_mtok="2"),
            )
        ],
        [config_pb2.Workspace(id="w", name="w", price_multiplier="1")],
        [
            config_pb2.ApiKey(
                id="k", key_hash=hashlib.sha256(KEY.encode()).hexdigest(), workspace_id="w", member_id="m"
            )
        ],
        [],
        [secret],
    )  # fmt: skip


def _line_headers(custom_id: str, recover: bool = False) -> ep.HttpHeaders:
    line = batch_assertion.BatchLine("w", "k", "m", "batch_1", custom_id, "/v1/chat/completions")
    pairs = {
        ":path": "/v1/chat/completions",
        ":method": "POST",
        BATCH_LINE_HEADER: batch_assertion.sign(LINE_KEY, line),
    }
    if recover:
        pairs[BATCH_RECOVER_HEADER] = "1"
    return _headers(pairs)


LINE_BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


async def _send_line(services: Services, custom_id: str, recover: bool = False) -> ep.ProcessingResponse:
    """A line's request up to its body's answer: sent upstream (a body mutation) or answered now."""
    exchange = Exchange(_batch_config(), services)
    assert not exchange.on_request_headers(_line_headers(custom_id, recover)).HasField("immediate_response")
    return await exchange.on_request_body(ep.HttpBody(body=LINE_BODY, end_of_stream=True))


async def _serve_line(services: Services, custom_id: str) -> None:
    exchange = Exchange(_batch_config(), services)
    exchange.on_request_headers(_line_headers(custom_id))
    reply = await exchange.on_request_body(ep.HttpBody(body=LINE_BODY, end_of_stream=True))
    assert reply.HasField("request_body")  # sent upstream
    await exchange.on_response_headers(_headers({":status": "200", "content-type": "application/json"}))
    await exchange.on_response_body(ep.HttpBody(body=orjson.dumps(CHAT_ANSWER), end_of_stream=True))


def _immediate(reply: ep.ProcessingResponse) -> tuple[int, dict[str, str], dict]:
    answer = reply.immediate_response
    headers = {h.header.key: h.header.raw_value.decode() for h in answer.headers.set_headers}
    return answer.status.code, headers, orjson.loads(answer.body)


async def test_a_recovery_probe_replays_a_served_line_and_charges_nothing(records):
    state = MemoryState(prefix="t")
    services = Services(records.append, Limiter(state), Idempotency(state))
    await _serve_line(services, "served")
    assert records[-1].credits == "0.002" and records[-1].custom_id == "served"
    status, headers, body = _immediate(await _send_line(services, "served", recover=True))
    assert status == 200 and body["choices"][0]["message"]["content"] == "hi"
    assert headers["x-credits-used"] == "0.002" and headers["idempotent-replayed"] == "true"
    assert records[-1].idempotent_replay and records[-1].credits == "0"


async def test_a_recovery_probe_of_a_line_never_sent_leaves_a_tombstone_that_later_sends_replay(records):
    """The probe claims the line's idempotency key and keeps its 404 there: a worker that was only
    slow (its lease ran out) and sends the line afterwards is answered the same 404, not served."""
    state = MemoryState(prefix="t")
    services = Services(records.append, Limiter(state), Idempotency(state))
    status, _, body = _immediate(await _send_line(services, "never", recover=True))
    assert (status, body["error"]["code"]) == (404, "batch_line_not_sent")
    assert records[-1].credits == "0" and records[-1].batch_id == "batch_1"
    late = await _send_line(services, "never")  # the slow worker, after the probe
    status, headers, body = _immediate(late)  # answered now: nothing went upstream
    assert (status, body["error"]["code"]) == (404, "batch_line_not_sent")
    assert headers["idempotent-replayed"] == "true"
    assert all(record.credits == "0" for record in records)


async def test_a_recovery_probe_of_a_line_still_running_is_told_to_wait(records):
    state = MemoryState(prefix="t")
    services = Services(records.append, Limiter(state), Idempotency(state))
    running = await _send_line(services, "running")
    assert running.HasField("request_body")  # upstream, no answer yet
    status, _, body = _immediate(await _send_line(services, "running", recover=True))
    assert (status, body["error"]["code"]) == (409, "idempotency_key_in_use")


async def test_the_recovery_header_means_nothing_without_a_line_credential(records):
    state = MemoryState(prefix="t")
    services = Services(records.append, Limiter(state), Idempotency(state))
    exchange = Exchange(_config(), services)
    exchange.on_request_headers(
        _headers({
            ":path": "/v1/chat/completions", ":method": "POST", "authorization": f"Bearer {KEY}",
            BATCH_RECOVER_HEADER: "1",
        })
    )  # fmt: skip
    reply = await exchange.on_request_body(ep.HttpBody(body=LINE_BODY, end_of_stream=True))
    assert reply.HasField("request_body")  # an ordinary request, served


async def test_attack_a_client_cannot_claim_a_batch_lines_idempotency_key_first(records):
    """A line's key is derivable (batch id and custom_id, both the client's to know). A client that
    sends it as its own Idempotency-Key, with another body, must not make the line a 422, nor with
    the same body make it a replay: batch lines keep their keys in a scope of their own."""
    state = MemoryState(prefix="t")
    services = Services(records.append, Limiter(state), Idempotency(state))
    other = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "other"}]})
    for custom_id, body in (("other-body", other), ("same-body", LINE_BODY)):
        exchange = Exchange(_batch_config(), services)
        exchange.on_request_headers(
            _headers({
                ":path": "/v1/chat/completions", ":method": "POST", "authorization": f"Bearer {KEY}",
                "idempotency-key": batch_assertion.idempotency_key("batch_1", custom_id),
            })
        )  # fmt: skip
        sent = await exchange.on_request_body(ep.HttpBody(body=body, end_of_stream=True))
        assert sent.HasField("request_body")
        await exchange.on_response_headers(_headers({":status": "200", "content-type": "application/json"}))
        await exchange.on_response_body(ep.HttpBody(body=orjson.dumps(CHAT_ANSWER), end_of_stream=True))
        line = await _send_line(services, custom_id)
        assert line.HasField("request_body"), custom_id  # the line goes upstream: not refused, not replayed
