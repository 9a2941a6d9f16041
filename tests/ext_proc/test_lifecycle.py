"""The request's lifecycle (ext_proc/lifecycle.py), transition by transition, through the real exchange.

Each row drives a real :class:`Exchange` with real ext_proc protobuf messages and the real
in-process services (limiter, idempotency store, usage records) into one state, applies one
event -- the next message, the client hanging up (``abort``, in every state) or an internal
error -- and checks the one exit: the states it moved through, exactly one usage record
(none for what is not metered), the limiter settled once with exactly what was charged, and
the Idempotency-Key kept for a replay or free for a retry. Together the rows walk every
transition the lifecycle allows (checked below); every message a state does not expect is an
illegal move, settled as a failure, never a silent state.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from infery_proto.v1 import config_pb2, usage_pb2
from infery_proto.wire import LOCAL_REPLY_HEADER

from ext_proc import config
from ext_proc.errors import GatewayError
from ext_proc.exchange import Exchange, Services
from ext_proc.idempotency import Idempotency, Proceed, Replay
from ext_proc.lifecycle import (
    ABANDONED,
    ADMITTED,
    FAILED,
    FAILING,
    FINAL,
    FINISHED,
    NEW,
    RECEIVED,
    RESPONDING,
    ROUTED,
    STREAMING,
    TRANSITIONS,
    UPLOADING,
    IllegalMove,
    State,
)
from ext_proc.limits import Admission, Limiter
from ext_proc.shared_state import MemoryState
from tests import audio_samples

KEY = "inf_lifecycle"
IDEM = "idem-1"
CHAT_PATH = "/v1/chat/completions"
ASK = [{"role": "user", "content": "hi"}]  # 4 framing + ceil(2/4) = 5 prompt tokens by the estimate
UPLOAD_PATH = "/v1/audio/transcriptions"
# An audio upload (RequestBody.STREAMED): its fields first, as every SDK sends them, then the file;
# the first chunk carries the model, so the upload is routed while the rest still comes.
UPLOAD_TYPE, UPLOAD = audio_samples.form({"model": "hear"}, audio_samples.wav(0.5))
UPLOAD_FIRST, UPLOAD_REST = UPLOAD[:4096], UPLOAD[4096:]


# -- the gateway: one provider, a plain model, a fallback chain -------------------------------


def _config(*, rpm: int = 1000, grant_key: bool = True) -> config.GatewayConfig:
    prices = config_pb2.Prices(input_per_mtok="1", output_per_mtok="2")
    provider = config_pb2.Provider(
        name="p", kind="openai", cluster="provider_p", base_path="/v1", host="h", api_key="sk-p"
    )
    anthropic = config_pb2.Provider(
        name="a", kind="anthropic", cluster="provider_a", host="h", api_key="sk-a"
    )
    return config.build(
        [provider, anthropic],
        [
            *(
                config_pb2.Model(slug=slug, provider="p", upstream_model="up", prices=prices)
                for slug in ("m", "c", "f")
            ),
            config_pb2.Model(slug="claude", provider="a", upstream_model="claude-up", prices=prices),
            config_pb2.Model(
                slug="hear",
                provider="p",
                upstream_model="whisper-1",
                prices=config_pb2.Prices(per_audio_second="1"),
            ),
        ],
        [
            config_pb2.Workspace(
                id="w",
                name="w",
                price_multiplier="1",
                rpm=rpm,
                tpm=100_000,
                budget_credits="1",
                budget_period="day",
            )
        ],
        [
            config_pb2.ApiKey(
                id="k", key_hash=hashlib.sha256(KEY.encode()).hexdigest(), workspace_id="w", member_id="mb"
            )
        ],
        [config_pb2.Route(slug="c", fallbacks=["f"], cluster="chain_c")],
        [config_pb2.DataPlaneSecret(name="d", attempt_grant_key=b"g" * 32)] if grant_key else [],
    )


class SlowStore(MemoryState):
    """The in-process store; while ``gate`` is set, an idempotency claim lands and then its reply
    waits (a slow Redis): the exchange sits in ADMITTED."""

    def __init__(self) -> None:
        super().__init__(prefix="life")
        self.gate: asyncio.Event | None = None
        self.waiting = asyncio.Event()

    async def idem_begin(self, *args: Any) -> tuple[str, bytes | None]:
        result = await super().idem_begin(*args)
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        return result


class SettleLog(Limiter):
    """The real limiter, noting what each admission is settled with."""

    def __init__(self, state: MemoryState) -> None:
        super().__init__(state)
        self.settled: list[tuple[int, Decimal]] = []

    async def settle(self, admission: Admission, actual_tokens: int, credits: Decimal) -> None:
        self.settled.append((actual_tokens, credits))
        await super().settle(admission, actual_tokens, credits)


class Watched(Exchange):
    """The real exchange, noting each move it makes."""

    __slots__ = ("moves",)

    def __init__(self, cfg: config.GatewayConfig | None, services: Services) -> None:
        super().__init__(cfg, services)
        self.moves: list[tuple[State, State]] = []

    def _move(self, new: State) -> None:
        before = self.state
        super()._move(new)
        self.moves.append((before, new))


@dataclass
class World:
    store: SlowStore = field(default_factory=SlowStore)
    records: list[usage_pb2.UsageRecord] = field(default_factory=list)
    config: config.GatewayConfig = field(default_factory=_config)
    path: str = CHAT_PATH  # of the exchange under test, and its body: its idempotency fingerprint
    body: bytes = b""
    pending: asyncio.Future[ep.ProcessingResponse] | None = None  # a body phase held in ADMITTED

    def __post_init__(self) -> None:
        self.limiter = SettleLog(self.store)
        self.idempotency = Idempotency(self.store)
        self.services = Services(self.records.append, self.limiter, self.idempotency)

    def exchange(self) -> Watched:
        return Watched(self.config, self.services)

    async def quiet(self) -> None:
        """Background work done: limiter settlements, idempotency releases and cleanups."""
        if self.pending is not None and not self.pending.done():
            self.pending.cancel()  # as the server does when the stream ends mid-phase
            await asyncio.gather(self.pending, return_exceptions=True)
        self.store.gate = None  # later claims (a retry's) answer at once
        for _ in range(3):
            await asyncio.sleep(0)
            await asyncio.gather(*self.services.background, *self.idempotency._cleanups)

    async def key(self) -> str:
        """What a retry with the same Idempotency-Key gets: the kept response, or a free key."""
        fingerprint = hashlib.sha256(b"POST " + self.path.encode() + b"\n" + self.body).digest()
        try:
            outcome = await self.idempotency.begin("w", IDEM, fingerprint, "mb")
        except GatewayError as err:
            return err.code  # idempotency_key_in_use: still held, a bug
        if isinstance(outcome, Replay):
            return "kept"
        assert isinstance(outcome, Proceed)
        await self.idempotency.release("w", IDEM, outcome.token, "mb")
        return "free"


# -- messages -------------------------------------------------------------------------------


def _headers(pairs: dict[str, str], end: bool = False) -> ep.HttpHeaders:
    return ep.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]
        ),
        end_of_stream=end,
    )


def _request_headers(
    *, key: str = KEY, path: str = CHAT_PATH, method: str = "POST", end: bool = False
) -> ep.HttpHeaders:
    pairs = {":path": path, ":method": method, "authorization": f"Bearer {key}", "idempotency-key": IDEM}
    return _headers(pairs, end)


def _event(doc: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


_CHUNK = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up"}


def _chunk(i: int) -> bytes:  # "w1 ": 3 characters
    return _event(
        {**_CHUNK, "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}]}
    )


STREAM_END = (
    _event({**_CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    + _event({**_CHUNK, "choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 500}})
    + b"data: [DONE]\n\n"
)
COMPLETION = orjson.dumps(
    {
        "id": "c1",
        "object": "chat.completion",
        "created": 1,
        "model": "up",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 500},
    }
)
LOCAL_REPLY = orjson.dumps({"error": {"type": "server_error", "code": "upstream_timeout", "message": "late"}})
REFUSAL = orjson.dumps(
    {"error": {"type": "invalid_request_error", "code": "model_not_allowed", "message": "no"}}
)


def _local(status: int, code: str, end: bool = False) -> ep.HttpHeaders:
    pairs = {":status": str(status), "content-type": "application/json", LOCAL_REPLY_HEADER: code}
    return _headers(pairs, end)


# -- driving an exchange into each state -------------------------------------------------


async def _body(world: World, ex: Exchange, doc: dict[str, Any]) -> ep.ProcessingResponse:
    world.body = orjson.dumps(doc)
    return await ex.on_request_body(ep.HttpBody(body=world.body, end_of_stream=True))


async def _new(world: World) -> Watched:
    return world.exchange()


async def _received(world: World) -> Watched:
    ex = world.exchange()
    ex.on_request_headers(_request_headers(path=world.path))
    return ex


async def _received_embeddings(world: World) -> Watched:
    world.path = "/v1/embeddings"
    return await _received(world)


async def _received_closed(world: World) -> Watched:
    world.config = _config(rpm=0)  # a workspace whose request limit is 0
    return await _received(world)


async def _received_without_grant_key(world: World) -> Watched:
    world.config = _config(grant_key=False)  # the data-plane secret not there yet
    return await _received(world)


async def _received_replay(world: World) -> Watched:
    """A first request with the key answered in full (and kept); then its retry, received."""
    first = await _responding(world)
    await first.on_response_body(ep.HttpBody(body=COMPLETION, end_of_stream=True))
    await world.quiet()
    world.limiter.settled.clear()
    return await _received(world)


async def _received_upload(world: World) -> Watched:
    ex = world.exchange()
    pairs = {
        ":path": UPLOAD_PATH,
        ":method": "POST",
        "authorization": f"Bearer {KEY}",
        "content-type": UPLOAD_TYPE,
    }
    assert ex.on_request_headers(_headers(pairs)) is None  # answered once the model has passed
    return ex


async def _uploading(world: World) -> Watched:
    ex = await _received_upload(world)
    answers = await ex.on_request_body(ep.HttpBody(body=UPLOAD_FIRST))
    assert isinstance(answers, list) and len(answers) == 2  # the headers' answer, the chunk's
    return ex


async def _upload_end(world: World, ex: Exchange, tail: bytes) -> Any:
    return await ex.on_request_body(ep.HttpBody(body=tail, end_of_stream=True))


async def _admitted(world: World) -> Watched:
    ex = await _received(world)
    world.store.gate = asyncio.Event()
    world.body = orjson.dumps({"model": "m", "messages": ASK})
    world.pending = asyncio.ensure_future(
        ex.on_request_body(ep.HttpBody(body=world.body, end_of_stream=True))
    )
    await world.store.waiting.wait()
    return ex


async def _routed(world: World) -> Watched:
    ex = await _received(world)
    await _body(world, ex, {"model": "m", "messages": ASK})
    return ex


async def _routed_stream(world: World) -> Watched:
    ex = await _received(world)
    await _body(world, ex, {"model": "m", "messages": ASK, "stream": True})
    return ex


async def _routed_chain(world: World) -> Watched:
    ex = await _received(world)
    await _body(world, ex, {"model": "c", "messages": ASK})
    return ex


async def _responding(world: World) -> Watched:
    ex = await _routed(world)
    await ex.on_response_headers(_headers({":status": "200", "content-type": "application/json"}))
    return ex


async def _streaming(world: World) -> Watched:
    ex = await _routed_stream(world)
    await ex.on_response_headers(_headers({":status": "200", "content-type": "text/event-stream"}))
    for i in range(1, 5):  # "w1 w2 w3 w4 ": 12 characters, 3 tokens
        await ex.on_response_body(ep.HttpBody(body=_chunk(i)))
    return ex


async def _failing(world: World) -> Watched:
    ex = await _routed(world)
    await ex.on_response_headers(_local(504, "upstream_timeout"))
    return ex


async def _failing_chain(world: World) -> Watched:
    ex = await _routed_chain(world)
    await ex.on_response_headers(_local(403, "model_not_allowed"))  # an attempt's refusal
    return ex


async def _finished(world: World) -> Watched:
    ex = await _responding(world)
    await ex.on_response_body(ep.HttpBody(body=COMPLETION, end_of_stream=True))
    return ex


async def _finished_stream(world: World) -> Watched:
    ex = await _streaming(world)
    await ex.on_response_body(ep.HttpBody(body=STREAM_END))  # [DONE] before the body's end
    return ex


async def _failed(world: World) -> Watched:
    ex = await _failing(world)
    await ex.on_response_body(ep.HttpBody(body=LOCAL_REPLY, end_of_stream=True))
    return ex


async def _abandoned(world: World) -> Watched:
    ex = await _streaming(world)
    ex.abort()
    return ex


DRIVE: dict[str, Callable[[World], Awaitable[Watched]]] = {
    "new": _new,
    "received": _received,
    "received, rpm 0": _received_closed,
    "received, no attempt key": _received_without_grant_key,
    "received, a retry": _received_replay,
    "received, embeddings": _received_embeddings,
    "received, an upload": _received_upload,
    "uploading": _uploading,
    "admitted": _admitted,
    "routed": _routed,
    "routed, stream": _routed_stream,
    "responding": _responding,
    "streaming": _streaming,
    "failing": _failing,
    "failing, chain": _failing_chain,
    "finished": _finished,
    "finished, stream": _finished_stream,
    "failed": _failed,
    "abandoned": _abandoned,
}


# -- the events -------------------------------------------------------------------------------


async def _release(world: World, ex: Exchange) -> Any:
    assert world.store.gate is not None and world.pending is not None
    world.store.gate.set()
    return await world.pending


def _msg(fn: Callable[[World, Exchange], Any]) -> Callable[[World, Exchange], Awaitable[Any]]:
    async def run(world: World, ex: Exchange) -> Any:
        result = fn(world, ex)
        return await result if asyncio.iscoroutine(result) else result

    return run


EVENTS: dict[str, Callable[[World, Exchange], Awaitable[Any]]] = {
    "headers": _msg(lambda w, ex: ex.on_request_headers(_request_headers())),
    "headers: the model list": _msg(
        lambda w, ex: ex.on_request_headers(_request_headers(path="/v1/models", method="GET"))
    ),
    "headers: a bad key": _msg(lambda w, ex: ex.on_request_headers(_request_headers(key="inf_nope"))),
    "headers: no body": _msg(lambda w, ex: ex.on_request_headers(_request_headers(end=True))),
    "body": _msg(lambda w, ex: _body(w, ex, {"model": "m", "messages": ASK})),
    "body: an unknown model": _msg(lambda w, ex: _body(w, ex, {"model": "nope", "messages": ASK})),
    "body: a chain": _msg(lambda w, ex: _body(w, ex, {"model": "c", "messages": ASK})),
    "body: Claude": _msg(lambda w, ex: _body(w, ex, {"model": "claude", "input": "hi"})),
    "the store answers": _release,
    "upload: the model's chunk": _msg(lambda w, ex: ex.on_request_body(ep.HttpBody(body=UPLOAD_FIRST))),
    "upload: the last chunk": _msg(lambda w, ex: _upload_end(w, ex, UPLOAD_REST)),
    # The form never closes: refused at its end, after the provider got the rest.
    "upload: a last chunk that breaks the form": _msg(lambda w, ex: _upload_end(w, ex, UPLOAD_REST[:-40])),
    "response headers: json": _msg(
        lambda w, ex: ex.on_response_headers(_headers({":status": "200", "content-type": "application/json"}))
    ),
    "response headers: SSE": _msg(
        lambda w, ex: ex.on_response_headers(
            _headers({":status": "200", "content-type": "text/event-stream"})
        )
    ),
    "response headers: Envoy's 504": _msg(
        lambda w, ex: ex.on_response_headers(_local(504, "upstream_timeout"))
    ),
    "response headers: Envoy's 504, no body": _msg(
        lambda w, ex: ex.on_response_headers(_local(504, "upstream_timeout", end=True))
    ),
    "response headers: Envoy's 413": _msg(
        lambda w, ex: ex.on_response_headers(_local(413, "request_too_large"))
    ),
    "response headers: a provider 503, no body": _msg(
        lambda w, ex: ex.on_response_headers(_headers({":status": "503", "content-length": "0"}, end=True))
    ),
    "response body: the answer": _msg(
        lambda w, ex: ex.on_response_body(ep.HttpBody(body=COMPLETION, end_of_stream=True))
    ),
    "response body: past the buffer": _msg(  # BUFFERED_PARTIAL: only the first part comes
        lambda w, ex: ex.on_response_body(ep.HttpBody(body=COMPLETION[:20], end_of_stream=False))
    ),
    "response body: the stream's end": _msg(
        lambda w, ex: ex.on_response_body(ep.HttpBody(body=STREAM_END, end_of_stream=True))
    ),
    "response body: the stream cut": _msg(lambda w, ex: ex.on_response_body(ep.HttpBody(end_of_stream=True))),
    "response body: more after [DONE]": _msg(
        lambda w, ex: ex.on_response_body(ep.HttpBody(body=_chunk(9), end_of_stream=True))
    ),
    "response body: Envoy's reply": _msg(
        lambda w, ex: ex.on_response_body(ep.HttpBody(body=LOCAL_REPLY, end_of_stream=True))
    ),
    "response body: the refusal": _msg(
        lambda w, ex: ex.on_response_body(ep.HttpBody(body=REFUSAL, end_of_stream=True))
    ),
    "abort": _msg(lambda w, ex: ex.abort()),
    "internal error": _msg(lambda w, ex: ex.internal_error()),
}


# -- the table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    start: str  # how the exchange is driven first (DRIVE)
    event: str  # what happens then (EVENTS)
    path: tuple[State, ...]  # the states it moves through, from where it was
    status: int = 0  # the usage record's; 0: none (not metered, or not settled yet)
    code: str = ""
    credits: str = "0"  # charged, and settled with the limiter
    key: str = "free"  # the Idempotency-Key afterwards: "kept" for a replay, "free" for a retry
    admitted: bool = True  # limits were admitted, so the limiter is settled once

    @property
    def id(self) -> str:
        return f"{self.start} + {self.event}"


_499 = {"status": 499, "code": "stream_interrupted"}
_500 = {"status": 500, "code": "internal_error"}
SERVED = "0.000011"  # 5 prompt tokens * 1/M + "w1 w2 w3 w4 " 3 output tokens * 2/M
ANSWERED = "0.002"  # the provider's usage: 1000 * 1/M + 500 * 2/M

ROWS = [
    # NEW
    Row("new", "headers", (NEW, RECEIVED), admitted=False),
    Row("new", "headers: the model list", (NEW, FINISHED), admitted=False),  # not metered
    Row("new", "headers: a bad key", (NEW, FAILED), admitted=False),  # nobody to bill
    Row("new", "headers: no body", (NEW, FAILED), 400, "invalid_json", admitted=False),
    Row("new", "abort", (NEW, ABANDONED), admitted=False),
    Row("new", "internal error", (NEW, FAILED), admitted=False),
    # RECEIVED
    Row("received", "body", (RECEIVED, ADMITTED, ROUTED)),
    Row("received", "body: an unknown model", (RECEIVED, FAILED), 404, "model_not_found", admitted=False),
    Row("received, rpm 0", "body", (RECEIVED, FAILED), 429, "rate_limit_exceeded", admitted=False),
    Row("received", "response headers: Envoy's 413", (RECEIVED, FAILING), admitted=False),
    Row("received", "abort", (RECEIVED, ABANDONED), **_499, admitted=False),
    Row("received", "internal error", (RECEIVED, FAILED), **_500, admitted=False),
    # ADMITTED (the body phase waits on the idempotency store)
    Row("admitted", "the store answers", (ADMITTED, ROUTED)),
    Row("received, a retry", "body", (RECEIVED, ADMITTED, FINISHED), 200, key="kept"),  # the replay
    Row(
        "received, no attempt key", "body: a chain", (RECEIVED, ADMITTED, FAILED), 503, "upstream_unavailable"
    ),
    # A refusal after the key was claimed lets it go, 4xx or not: the request was never served.
    Row("received, embeddings", "body: Claude", (RECEIVED, ADMITTED, FAILED), 400, "unsupported_endpoint"),
    Row("received, an upload", "upload: the model's chunk", (RECEIVED, ADMITTED, UPLOADING)),
    Row("admitted", "abort", (ADMITTED, ABANDONED), **_499),
    Row("admitted", "internal error", (ADMITTED, FAILED), **_500),
    # ROUTED
    Row("routed", "response headers: json", (ROUTED, RESPONDING)),
    Row("routed, stream", "response headers: SSE", (ROUTED, STREAMING)),
    Row("routed", "response headers: Envoy's 504", (ROUTED, FAILING)),
    Row("routed", "response headers: Envoy's 504, no body", (ROUTED, FAILED), 504, "upstream_timeout"),
    Row(
        "routed",
        "response headers: a provider 503, no body",
        (ROUTED, FINISHED),
        503,
        "upstream_unavailable",
    ),
    Row("routed", "abort", (ROUTED, ABANDONED), **_499),
    Row("routed", "internal error", (ROUTED, FAILED), **_500),
    # UPLOADING: routed while the upload's body still passes; the provider may answer before its end
    Row("uploading", "upload: the last chunk", (UPLOADING, ROUTED)),
    Row(
        "uploading", "upload: a last chunk that breaks the form", (UPLOADING, FAILED), 400, "invalid_request"
    ),
    Row("uploading", "response headers: json", (UPLOADING, RESPONDING)),
    Row("uploading", "response headers: Envoy's 504", (UPLOADING, FAILING)),
    Row("uploading", "response headers: Envoy's 504, no body", (UPLOADING, FAILED), 504, "upstream_timeout"),
    Row(
        "uploading",
        "response headers: a provider 503, no body",
        (UPLOADING, FINISHED),
        503,
        "upstream_unavailable",
    ),
    Row("uploading", "abort", (UPLOADING, ABANDONED), **_499),  # nothing served, nothing charged
    Row("uploading", "internal error", (UPLOADING, FAILED), **_500),
    # RESPONDING
    Row("responding", "response body: the answer", (RESPONDING, FINISHED), 200, credits=ANSWERED, key="kept"),
    Row("responding", "response body: past the buffer", (RESPONDING, FAILED), 502, "upstream_error"),
    Row("responding", "abort", (RESPONDING, ABANDONED), **_499),  # nothing reached the client
    Row("responding", "internal error", (RESPONDING, FAILED), **_500),
    # STREAMING: what reached the client is charged, however the stream ends
    Row(
        "streaming",
        "response body: the stream's end",
        (STREAMING, FINISHED),
        200,
        credits=ANSWERED,
        key="kept",
    ),
    Row("streaming", "response body: the stream cut", (STREAMING, FINISHED), 200, "upstream_error", SERVED),
    Row("streaming", "abort", (STREAMING, ABANDONED), **_499, credits=SERVED),
    Row("streaming", "internal error", (STREAMING, FAILED), **_500, credits=SERVED),
    # FAILING: the gateway's own error stands, whatever comes
    Row("failing", "response body: Envoy's reply", (FAILING, FAILED), 504, "upstream_timeout"),
    Row(
        "failing, chain",
        "response body: the refusal",
        (FAILING, FAILED),
        403,
        "model_not_allowed",
        key="kept",
    ),
    Row("failing", "abort", (FAILING, FAILED), 504, "upstream_timeout"),
    Row("failing", "internal error", (FAILING, FAILED), **_500),
    # Final states: nothing moves, nothing is settled twice
    Row("finished", "abort", (FINISHED,), 200, credits=ANSWERED, key="kept"),
    Row("finished", "internal error", (FINISHED,), 200, credits=ANSWERED, key="kept"),
    Row(
        "finished, stream", "response body: more after [DONE]", (FINISHED,), 200, credits=ANSWERED, key="kept"
    ),
    Row("failed", "abort", (FAILED,), 504, "upstream_timeout"),
    Row("failed", "internal error", (FAILED,), 504, "upstream_timeout"),
    Row("abandoned", "abort", (ABANDONED,), **_499, credits=SERVED),
    Row("abandoned", "internal error", (ABANDONED,), **_499, credits=SERVED),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
async def test_each_transition_settles_the_request_once(row: Row) -> None:
    world = World()
    ex = await DRIVE[row.start](world)
    assert ex.state is row.path[0]
    ex.moves.clear()
    await EVENTS[row.event](world, ex)
    assert ex.moves == list(zip(row.path, row.path[1:], strict=False))
    assert ex.state is row.path[-1]
    await world.quiet()

    mine = [r for r in world.records if r.request_id == ex.request_id]
    if ex.state not in FINAL:  # nothing is settled before the end
        assert mine == [] and world.limiter.settled == []
        ex.abort()
        await world.quiet()
        return
    if not row.status:  # not metered: no record, nothing admitted
        assert mine == [] and world.limiter.settled == []
    else:
        assert len(mine) == 1
        record = mine[0]
        assert (record.status, record.error_code) == (row.status, row.code)
        assert record.credits == row.credits
        tokens = record.input_tokens + record.output_tokens
        assert world.limiter.settled == ([(tokens, Decimal(record.credits))] if row.admitted else [])
        assert record.usage_estimated == (row.credits == SERVED)
    assert await world.key() == row.key


def test_the_lifecycle_has_one_way_out_of_every_state() -> None:
    """Final states allow no move (the exit happens once); every other state can fail, and be
    abandoned unless the gateway's own error is already on its way (FAILING ends FAILED)."""
    for state, targets in TRANSITIONS.items():
        if state in FINAL:
            assert targets == frozenset()
        else:
            assert FAILED in targets and (ABANDONED in targets) == (state is not FAILING)
    assert {FINISHED, FAILED, ABANDONED} == FINAL and set(TRANSITIONS) == set(State)


def test_the_table_walks_every_transition_and_hangs_up_in_every_state() -> None:
    walked = {(a, b) for row in ROWS for a, b in zip(row.path, row.path[1:], strict=False)}
    allowed = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert walked == allowed
    assert {row.path[0] for row in ROWS if row.event == "abort"} == set(State)
    assert {row.path[0] for row in ROWS if row.event == "internal error"} == set(State)


# -- messages a state does not expect ----------------------------------------------------------

MESSAGES: dict[str, Callable[[World, Exchange], Awaitable[Any]]] = {
    "request_headers": EVENTS["headers"],
    "request_body": EVENTS["body"],
    "response_headers": EVENTS["response headers: json"],
    "response_body": EVENTS["response body: the answer"],
}
EXPECTED = {
    NEW: {"request_headers"},
    RECEIVED: {"request_body", "response_headers"},  # Envoy may answer itself while buffering
    ADMITTED: set(),  # the body phase is running: the dispatch sends nothing before it answers
    UPLOADING: {"request_body", "response_headers"},  # the upload's chunks; an answer before its end
    ROUTED: {"response_headers"},
    RESPONDING: {"response_body"},
    STREAMING: {"response_body"},
    FAILING: {"response_body"},
    FINISHED: {"response_body"},  # passed on: a stream's bytes after [DONE] go nowhere
    FAILED: {"response_body"},
    ABANDONED: {"response_body"},
}
_STATE_DRIVE = {
    NEW: "new",
    RECEIVED: "received",
    ADMITTED: "admitted",
    UPLOADING: "uploading",
    ROUTED: "routed",
    RESPONDING: "responding",
    STREAMING: "streaming",
    FAILING: "failing",
    FINISHED: "finished",
    FAILED: "failed",
    ABANDONED: "abandoned",
}
UNEXPECTED = [(state, kind) for state in State for kind in MESSAGES if kind not in EXPECTED[state]]


@pytest.mark.parametrize(("state", "kind"), UNEXPECTED, ids=[f"{s.name} {k}" for s, k in UNEXPECTED])
async def test_a_message_a_state_does_not_expect_is_an_illegal_move_settled_as_failed(
    state: State, kind: str
) -> None:
    world = World()
    ex = await DRIVE[_STATE_DRIVE[state]](world)
    before = list(world.records)
    with pytest.raises(IllegalMove):
        await MESSAGES[kind](world, ex)
    assert ex.state is state  # nothing half-done: the move was refused before any change
    reply = ex.internal_error()  # what the dispatch does with any exception of a phase
    assert reply.immediate_response.status.code == 500
    await world.quiet()
    mine = [r for r in world.records if r.request_id == ex.request_id]
    assert len(mine) == (0 if state is NEW else 1)
    if state in FINAL:
        assert ex.state is state and world.records == before  # settled before, not again
    else:
        assert ex.state is FAILED
        if mine:
            assert (mine[0].status, mine[0].error_code) == (500, "internal_error")
    assert len(world.limiter.settled) == (0 if state in (NEW, RECEIVED) else 1)
    ex.abort()  # the stream's end after it changes nothing
    await world.quiet()
    assert [r for r in world.records if r.request_id == ex.request_id] == mine


# -- the kept response is the one the client got --------------------------------------------


async def test_a_kept_gateway_error_is_replayed_with_its_body() -> None:
    """A chain's 4xx refusal is kept for the retry: its envelope (naming the targets), not an empty body."""
    world = World()
    ex = await _failing_chain(world)
    reply = await ex.on_response_body(ep.HttpBody(body=REFUSAL, end_of_stream=True))
    sent = reply.response_body.response.body_mutation.body
    assert b"fallback chain: c, f" in sent
    await world.quiet()
    retry = await _received(world)
    replay = await _body(world, retry, {"model": "c", "messages": ASK})
    assert replay.immediate_response.status.code == 403 and replay.immediate_response.body == sent
    assert retry.state is FINISHED and retry.replayed


async def test_a_client_gone_while_the_key_is_stored_is_still_billed_once_and_the_key_freed() -> None:
    """The record and the limits are settled before the idempotency store is awaited: a reset
    during that wait neither unbills nor records twice, and the key is let go."""
    world = World()
    ex = await _responding(world)
    gate = asyncio.Event()
    complete = world.store.idem_complete

    async def slow_complete(*args: Any) -> bool:
        await gate.wait()
        return await complete(*args)

    world.store.idem_complete = slow_complete  # type: ignore[method-assign]
    phase = asyncio.ensure_future(ex.on_response_body(ep.HttpBody(body=COMPLETION, end_of_stream=True)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert ex.state is FINISHED and not phase.done()
    phase.cancel()  # the h2 server cancels the handler when Envoy resets the stream
    await asyncio.gather(phase, return_exceptions=True)
    ex.abort()  # and the dispatch's end-of-stream hook runs
    gate.set()
    await world.quiet()
    mine = [r for r in world.records if r.request_id == ex.request_id]
    assert len(mine) == 1 and mine[0].status == 200 and mine[0].credits == ANSWERED
    assert world.limiter.settled == [(1500, Decimal(ANSWERED))]
    assert await world.key() == "free"  # released: the client never heard the end


# -- an upload's chunks outside UPLOADING --------------------------------------------------------


async def test_an_uploads_chunk_after_its_last_is_an_illegal_move() -> None:
    world = World()
    ex = await _uploading(world)
    await _upload_end(world, ex, UPLOAD_REST)
    assert ex.state is ROUTED
    with pytest.raises(IllegalMove):
        await ex.on_request_body(ep.HttpBody(body=b"more", end_of_stream=True))
    assert ex.state is ROUTED


async def test_an_uploads_chunks_after_an_early_answer_go_nowhere_and_change_nothing() -> None:
    """The provider answered before the upload ended: the rest of the upload is dropped, and the
    answer settles the request once."""
    world = World()
    ex = await _uploading(world)
    await ex.on_response_headers(_headers({":status": "400", "content-type": "application/json"}))
    assert ex.state is RESPONDING
    dropped = await ex.on_request_body(ep.HttpBody(body=UPLOAD_REST[:100]))
    assert isinstance(dropped, ep.ProcessingResponse)
    assert dropped.request_body.response.body_mutation.clear_body and ex.state is RESPONDING
    await ex.on_response_body(ep.HttpBody(body=REFUSAL, end_of_stream=True))
    assert ex.state is FINISHED
    await ex.on_request_body(ep.HttpBody(body=UPLOAD_REST[100:], end_of_stream=True))
    await world.quiet()
    mine = [r for r in world.records if r.request_id == ex.request_id]
    assert len(mine) == 1 and mine[0].status == 400 and world.limiter.settled == [(0, Decimal(0))]
