"""The one dispatch loop (ext_proc/server.py), fed ext_proc messages as Envoy's filters send them.

It picks the processor from the first message (the listener's Exchange, or a chain attempt),
answers each phase, asks Envoy for more time when the request body phase waits, turns any
exception of a phase into the processor's internal-error reply, and always ends with the
processor's end-of-stream hook -- which is what settles a request whose client left.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import struct_pb2, text_format
from infery_proto.v1 import config_pb2, usage_pb2

from ext_proc import config
from ext_proc import envoy_messages as msg
from ext_proc.deadline import MessageDeadline
from ext_proc.exchange import Services
from ext_proc.idempotency import Idempotency
from ext_proc.limits import Limiter
from ext_proc.received import SPLIT_SIZE, Received
from ext_proc.server import PROCESS, methods
from ext_proc.shared_state import MemoryState

KEY = "inf_dispatch"
CHAT = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
STREAM = orjson.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})


def _config() -> config.GatewayConfig:
    return config.build(
        [
            config_pb2.Provider(
                name="p", kind="openai", cluster="cp", base_path="/v1", host="h", api_key="sk-p"
            )
        ],
        [
            config_pb2.Model(
                slug="m", provider="p", upstream_model="up", prices=config_pb2.Prices(output_per_mtok="2")
            )
        ],
        [config_pb2.Workspace(id="w", name="w", price_multiplier="1")],
        [
            config_pb2.ApiKey(
                id="k", key_hash=hashlib.sha256(KEY.encode()).hexdigest(), workspace_id="w", member_id="mb"
            )
        ],
        [],
        [config_pb2.DataPlaneSecret(name="d", attempt_grant_key=b"g" * 32)],
    )


def _headers(pairs: dict[str, str], end: bool = False) -> ep.HttpHeaders:
    return ep.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]
        ),
        end_of_stream=end,
    )


def request_headers(**extra: str) -> ep.ProcessingRequest:
    pairs = {":path": "/v1/chat/completions", ":method": "POST", "authorization": f"Bearer {KEY}", **extra}
    return ep.ProcessingRequest(request_headers=_headers(pairs))


def request_body(raw: bytes = CHAT) -> ep.ProcessingRequest:
    return ep.ProcessingRequest(request_body=ep.HttpBody(body=raw, end_of_stream=True))


def response_headers(content_type: str = "application/json") -> ep.ProcessingRequest:
    return ep.ProcessingRequest(response_headers=_headers({":status": "200", "content-type": content_type}))


def response_body(raw: bytes, end: bool = True) -> ep.ProcessingRequest:
    return ep.ProcessingRequest(response_body=ep.HttpBody(body=raw, end_of_stream=end))


def _chunk(text: str) -> bytes:
    doc = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "up"}
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    return b"data: " + orjson.dumps({**doc, "choices": [choice]}) + b"\n\n"


COMPLETION = orjson.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "up",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1000},
    }
)


class _Requests:
    """The messages of one stream, each handed over and no longer held (as ``h2_grpc.Requests``)."""

    def __init__(self, inbox: asyncio.Queue[ep.ProcessingRequest | Received | None]) -> None:
        self._inbox = inbox

    def __aiter__(self) -> AsyncIterator[ep.ProcessingRequest | Received]:
        return self

    async def __anext__(self) -> ep.ProcessingRequest | Received:
        item = await self._inbox.get()
        if item is None:
            raise StopAsyncIteration
        return item


class Envoy:
    """One ext_proc stream as Envoy's filter drives it: messages go in one at a time, as each is answered."""

    def __init__(self, store: MemoryState | None = None, deadline: MessageDeadline | None = None) -> None:
        self.records: list[usage_pb2.UsageRecord] = []
        state = store or MemoryState(prefix="dispatch")
        self.services = Services(self.records.append, Limiter(state), Idempotency(state))
        handler = methods(_config, self.services, deadline or MessageDeadline())[PROCESS].handler
        self._inbox: asyncio.Queue[ep.ProcessingRequest | Received | None] = asyncio.Queue()
        self.replies = handler(_Requests(self._inbox))

    async def send(self, request: ep.ProcessingRequest | Received, answers: int = 1) -> list[Any]:
        await self._inbox.put(request)
        return [await anext(self.replies) for _ in range(answers)]

    async def close(self) -> None:
        """Envoy ends the stream (the request is over, or the client went away)."""
        await self._inbox.put(None)
        assert [r async for r in self.replies] == []
        await asyncio.gather(*self.services.background)


async def test_a_request_through_every_phase_is_answered_and_recorded_once():
    envoy = Envoy()
    [headers] = await envoy.send(request_headers())
    assert headers.WhichOneof("response") == "request_headers"
    [body] = await envoy.send(request_body())
    assert orjson.loads(body.request_body.response.body_mutation.body)["model"] == "up"
    [answer_headers] = await envoy.send(response_headers())
    assert answer_headers.WhichOneof("response") == "response_headers"
    [answer] = await envoy.send(response_body(COMPLETION))
    set_headers = {
        h.header.key: h.header.raw_value for h in answer.response_body.response.header_mutation.set_headers
    }
    assert set_headers["x-credits-used"] == b"0.002"
    [trailers] = await envoy.send(ep.ProcessingRequest(response_trailers=ep.HttpTrailers()))
    assert trailers.WhichOneof("response") == "response_trailers"
    await envoy.close()
    assert [(r.status, r.credits) for r in envoy.records] == [(200, "0.002")]


async def test_a_large_body_reaches_its_phase_as_a_view_of_its_message_let_go_once_parsed():
    """The HTTP/2 server hands a large message over as a view of its buffer; the method's
    deserializer for those keeps the body a view of it, and nothing holds it once the phase has answered
    (a bytearray cannot grow while any view of it is alive)."""
    prompt = "lorem ipsum " * (SPLIT_SIZE // 10)
    raw = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": prompt}]})
    buffer = bytearray(request_body(raw).SerializeToString())
    large = methods(_config, Envoy().services)[PROCESS].deserialize_large
    assert large is not None
    message = large(memoryview(buffer))
    assert isinstance(message, Received)
    assert message.request_body.body.obj is buffer
    envoy = Envoy()
    await envoy.send(request_headers())
    [reply] = await envoy.send(message)
    del message
    assert isinstance(reply, msg.Spliced)
    assert orjson.loads(reply.body)["messages"][0]["content"] == prompt
    buffer.append(0)  # raises BufferError while a view of it is alive
    await envoy.send(response_headers())
    await envoy.send(response_body(COMPLETION))
    await envoy.close()
    assert [r.status for r in envoy.records] == [200]


async def test_a_phase_that_raises_gets_the_internal_error_reply_and_is_settled_as_failed():
    envoy = Envoy()
    await envoy.send(request_headers())
    # A response body before anything was sent upstream: an illegal move in the exchange.
    [reply] = await envoy.send(response_body(COMPLETION))
    answer = reply.immediate_response
    assert answer.status.code == 500 and orjson.loads(answer.body)["error"]["code"] == "internal_error"
    request_id = {h.header.key: h.header.raw_value for h in answer.headers.set_headers}["x-request-id"]
    assert [r async for r in envoy.replies] == []  # the stream is over
    assert [(r.status, r.error_code, r.request_id.encode()) for r in envoy.records] == [
        (500, "internal_error", request_id)
    ]


async def test_a_stream_the_client_leaves_is_settled_by_the_end_of_stream_hook():
    envoy = Envoy()
    await envoy.send(request_headers())
    await envoy.send(request_body(STREAM))
    await envoy.send(response_headers("text/event-stream"))
    await envoy.send(response_body(_chunk("abcdefgh"), end=False))
    assert envoy.records == []
    await envoy.close()  # Envoy closes the ext_proc stream: the client is gone
    [record] = envoy.records
    assert (record.status, record.error_code, record.output_tokens) == (499, "stream_interrupted", 2)
    assert record.credits == "0.000004" and record.usage_estimated


async def test_a_reset_stream_is_settled_too():
    envoy = Envoy()
    await envoy.send(request_headers())
    await envoy.send(request_body(STREAM))
    await envoy.send(response_headers("text/event-stream"))
    await envoy.send(response_body(_chunk("abcd"), end=False))
    await envoy.replies.aclose()  # the h2 server drops the handler when Envoy resets the stream
    await asyncio.gather(*envoy.services.background)
    assert [(r.status, r.output_tokens) for r in envoy.records] == [(499, 1)]


class SlowStore(MemoryState):
    """Idempotency claims that take ``delay`` seconds (a slow Redis)."""

    delay = 0.2

    async def idem_begin(self, *args: Any) -> tuple[str, bytes | None]:
        await asyncio.sleep(self.delay)
        return await super().idem_begin(*args)


async def test_a_body_phase_that_waits_asks_envoy_for_more_time_first():
    deadline = MessageDeadline(message_timeout_s=0.1, max_message_timeout_s=7)
    envoy = Envoy(SlowStore(prefix="slow"), deadline)
    await envoy.send(request_headers(**{"idempotency-key": "k1"}))
    more, answer = await envoy.send(request_body(), answers=2)
    assert more.override_message_timeout.ToMilliseconds() == 7000 and more.WhichOneof("response") is None
    assert answer.WhichOneof("response") == "request_body"
    await envoy.close()


async def test_a_body_phase_that_answers_at_once_asks_for_nothing():
    envoy = Envoy(SlowStore(prefix="slow"), MessageDeadline(message_timeout_s=10))
    await envoy.send(request_headers())  # no idempotency key: nothing waits
    [answer] = await envoy.send(request_body())
    assert answer.WhichOneof("response") == "request_body"
    await envoy.close()


def _attempt_first(grant: str) -> ep.ProcessingRequest:
    metadata = base_pb2.Metadata()
    metadata.filter_metadata["infery.target"].update({"model": "m"})
    attrs = struct_pb2.Struct()
    attrs.update({"xds.upstream_host_metadata": text_format.MessageToString(metadata)})
    first = request_headers(cookie="c=1")
    first.attributes["envoy.filters.http.ext_proc"].CopyFrom(attrs)
    first.metadata_context.filter_metadata["infery.attempt"].update(
        {"grant": grant, "endpoint": "/v1/chat/completions"}
    )
    return first


async def test_the_same_loop_serves_a_chain_attempt_chosen_by_its_first_message():
    from ext_proc.attempt_grant import Grant, sign

    envoy = Envoy()
    grant = sign(b"g" * 32, Grant("r1", "w", "mb"), 2**40)
    [headers] = await envoy.send(_attempt_first(grant))
    assert headers.WhichOneof("response") == "request_headers"
    [body] = await envoy.send(request_body())
    mutation = body.request_body.response.header_mutation
    assert (":authority", b"h") in [(h.header.key, h.header.raw_value) for h in mutation.set_headers]
    assert "cookie" in mutation.remove_headers
    await envoy.close()
    assert envoy.records == []  # the listener's exchange records the request, not its attempts


async def test_an_attempt_without_a_grant_is_refused_for_every_message():
    envoy = Envoy()
    [headers] = await envoy.send(_attempt_first("forged"))
    [body] = await envoy.send(request_body())
    for reply in (headers, body):
        assert reply.immediate_response.status.code == 403
        assert b"sk-p" not in reply.SerializeToString()
    await envoy.close()
