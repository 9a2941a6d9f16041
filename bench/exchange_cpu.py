"""CPU per request of the listener exchange alone, in process: ``python -m bench.exchange_cpu``.

Drives :class:`ext_proc.exchange.Exchange` through Envoy's message sequence with fixture
protobuf messages -- the bench's workload (one 48-word user message), answered buffered
(a ~1.6 KB completion with usage), the same to a model with a fallback chain (the chain's
cluster, its router headers and attempt grant), and streamed (~100 chunks of 12
characters, then the finish and usage chunks) -- with the real in-process limiter,
idempotency store and a recorder that drops the records. No Envoy, no gRPC framing: only
what the exchange itself costs, measured with ``time.process_time`` over many requests so a
code change to the exchange shows up without the noise of a full ``make bench``. Workspace
limits (rpm, tpm) are on, as in the bench, so admission and settlement are counted.

``--tracing on`` gives the exchange a tracer (ext_proc/tracing.py) whose spans are batched
by the SDK's BatchSpanProcessor and encoded to OTLP protobuf by its thread, as for export,
then dropped: the cost of tracing on, export encoding included (the thread's CPU counts in
``process_time``). Off (the default) is what every request pays when tracing is off.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from infery_proto.v1 import config_pb2
from infery_proto.wire import SERVED_HEADER

from ext_proc import config, tracing
from ext_proc.exchange import Exchange, Services
from ext_proc.idempotency import Idempotency
from ext_proc.limits import Limiter
from ext_proc.shared_state import MemoryState

KEY = "inf_bench-key"
WORDS = " ".join(f"word{i:02d}-lorem-ipsum-dolor" for i in range(48))


def gateway_config() -> config.GatewayConfig:
    prices = config_pb2.Prices(input_per_mtok="1", output_per_mtok="2")
    return config.build(
        [
            config_pb2.Provider(
                name="p", kind="openai", cluster="provider_p", base_path="/v1", host="h", api_key="sk"
            )
        ],
        [
            config_pb2.Model(slug=slug, provider="p", upstream_model="up", prices=prices)
            for slug in ("m", "chained", "backup")
        ],
        [config_pb2.Workspace(id="w", name="w", price_multiplier="1", rpm=10**9, tpm=10**12)],
        [
            config_pb2.ApiKey(
                id="k", key_hash=hashlib.sha256(KEY.encode()).hexdigest(), workspace_id="w", member_id="m"
            )
        ],
        [
            # "chained" falls back to "backup": its requests go to the chain's cluster (chat --chain)
            config_pb2.Route(
                slug="chained",
                fallbacks=["backup"],
                retry_on=["5xx", "429", "timeout"],
                attempt_timeout_s=30,
                total_timeout_s=120,
                cluster="chain_chained",
            )
        ],
        [config_pb2.DataPlaneSecret(name="data_plane", attempt_grant_key=b"k" * 32)],
    )


def _headers(pairs: dict[str, str], end: bool = False) -> ep.HttpHeaders:
    return ep.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()]
        ),
        end_of_stream=end,
    )


REQUEST_HEADERS = _headers(
    {
        ":path": "/v1/chat/completions",
        ":method": "POST",
        ":authority": "gw",
        "authorization": f"Bearer {KEY}",
        "content-type": "application/json",
        "user-agent": "OpenAI/Python 2.0",
        "accept": "application/json",
    }
)
ASK = [{"role": "user", "content": WORDS}]
CHAT_BODY = ep.HttpBody(body=orjson.dumps({"model": "m", "messages": ASK}), end_of_stream=True)
CHAIN_BODY = ep.HttpBody(body=orjson.dumps({"model": "chained", "messages": ASK}), end_of_stream=True)
STREAM_BODY = ep.HttpBody(
    body=orjson.dumps({"model": "m", "messages": ASK, "stream": True}), end_of_stream=True
)
JSON_HEADERS = _headers({":status": "200", "content-type": "application/json", "content-length": "1600"})
CHAIN_HEADERS = _headers(
    {":status": "200", "content-type": "application/json", "content-length": "1600", SERVED_HEADER: "chained"}
)
SSE_HEADERS = _headers({":status": "200", "content-type": "text/event-stream"})
COMPLETION = ep.HttpBody(
    body=orjson.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "created": 1,
            "model": "up",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": WORDS}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 300, "completion_tokens": 300, "total_tokens": 600},
        }
    ),
    end_of_stream=True,
)


def _event(doc: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\n\n"


def _chunks() -> list[ep.HttpBody]:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up"}
    pieces = [WORDS[i : i + 12] for i in range(0, len(WORDS), 12)][:100]
    out = [
        ep.HttpBody(
            body=_event({**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]})
        )
        for p in pieces
    ]
    tail = _event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    tail += _event({**base, "choices": [], "usage": {"prompt_tokens": 300, "completion_tokens": 100}})
    out.append(ep.HttpBody(body=tail + b"data: [DONE]\n\n", end_of_stream=True))
    return out


CHUNKS = _chunks()


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Runs a phase that never waits (in-process state) without an event loop turn."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("a phase waited")


def _buffered(
    services: Services, cfg: config.GatewayConfig, body: ep.HttpBody, headers: ep.HttpHeaders
) -> None:
    """One buffered chat: the four messages of a non-streamed request, answered by COMPLETION."""
    exchange = Exchange(cfg, services)
    exchange.on_request_headers(REQUEST_HEADERS)
    _run(exchange.on_request_body(body))
    _run(exchange.on_response_headers(headers))
    _run(exchange.on_response_body(COMPLETION))
    exchange.abort()


def one_chat(services: Services, cfg: config.GatewayConfig) -> None:
    _buffered(services, cfg, CHAT_BODY, JSON_HEADERS)


def one_chain(services: Services, cfg: config.GatewayConfig) -> None:
    """The buffered chat, to a model with a fallback chain, answered by its primary."""
    _buffered(services, cfg, CHAIN_BODY, CHAIN_HEADERS)


def one_stream(services: Services, cfg: config.GatewayConfig) -> None:
    exchange = Exchange(cfg, services)
    exchange.on_request_headers(REQUEST_HEADERS)
    _run(exchange.on_request_body(STREAM_BODY))
    _run(exchange.on_response_headers(SSE_HEADERS))
    for chunk in CHUNKS:
        _run(exchange.on_response_body(chunk))
    exchange.abort()


def _tracer() -> tracing.Tracer:
    """A tracer whose spans are batched and OTLP-encoded by the SDK's thread, then dropped."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Encoded(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            encode_spans(spans).SerializeToString()
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Encoded()))
    return tracing.Tracer(provider.get_tracer("bench"), provider)


async def _measure(
    one: Callable[[Services, config.GatewayConfig], None], n: int, tracer: tracing.Tracer | None = None
) -> float:
    state = MemoryState(prefix="b")
    services = Services(lambda record: None, Limiter(state), Idempotency(state), tracer=tracer)
    cfg = gateway_config()
    for _ in range(min(n, 200)):  # warm-up
        one(services, cfg)
    await asyncio.sleep(0)  # the background settlements of the warm-up
    gc.collect()
    start = time.process_time()
    for i in range(n):
        one(services, cfg)
        if i % 100 == 99:
            await asyncio.sleep(0)  # let the limiter settlements run, as the server's loop would
    await asyncio.sleep(0)
    if tracer is not None and tracer.provider is not None:
        tracer.provider.force_flush()  # the last batches' encoding counts too
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3000, help="requests per run")
    parser.add_argument("--runs", type=int, default=5, help="runs; the best is reported")
    parser.add_argument("--tracing", choices=("off", "on"), default="off", help="request traces (see above)")
    parser.add_argument(
        "--only", choices=("chat", "chain", "stream"), help="one workload (instruction counts per run)"
    )
    args = parser.parse_args()
    tracer = _tracer() if args.tracing == "on" else None
    for name, one, n in (
        ("chat", one_chat, args.n),
        ("chain (chat, fallbacks)", one_chain, args.n),
        ("stream (~100 chunks)", one_stream, max(1, args.n // 10)),
    ):
        if args.only and not name.startswith(args.only):
            continue
        best = min(asyncio.run(_measure(one, n, tracer)) for _ in range(args.runs))
        print(
            f"{name:22s} {best:8.1f} us CPU per request (best of {args.runs} x {n}, tracing {args.tracing})"
        )


if __name__ == "__main__":
    main()
