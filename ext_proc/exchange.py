"""One HTTP request through the gateway, across its ext_proc messages.

Envoy sends, in order: request headers, request body (buffered), response
headers, response body (buffered, or chunk by chunk for SSE). Each
``on_*`` method answers one of them. All state lives on the instance, so
every ext_proc stream is self-contained and any ext_proc process can serve it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from infery_proto.v1 import usage_pb2

from ext_proc import catalog_responses
from ext_proc import envoy_messages as msg
from ext_proc.auth import authenticate
from ext_proc.config import ApiKey, GatewayConfig, Model
from ext_proc.errors import GatewayError, envelope
from ext_proc.media_fetch import fetch_media
from ext_proc.metering import ZERO, credits, format_credits
from ext_proc.translators.base import (
    Endpoint,
    ResponseContext,
    StreamTranslator,
    Target,
    Usage,
)

log = logging.getLogger("infery.ext_proc")

ENDPOINTS = {
    "/v1/chat/completions": Endpoint.CHAT,
    "/v1/embeddings": Endpoint.EMBEDDINGS,
    "/v1/images/generations": Endpoint.IMAGES,
}
ROUTE_HEADER = "x-infery-cluster"
MODEL_ROUTE_HEADER = "x-infery-route"
_REQUEST_HEADERS = frozenset({":path", ":method", "authorization", "x-request-id"})
LOCAL_REPLY_HEADER = "x-infery-local-reply"  # Envoy's own error reply; the value is its error code
_RESPONSE_HEADERS = frozenset({":status", "content-type", LOCAL_REPLY_HEADER})
# Client headers that must never reach a provider: credentials (the provider's
# own are set per attempt), our routing header, and encodings we could not parse.
_STRIP_UPSTREAM = ("authorization", "x-api-key", "x-goog-api-key", "api-key", "accept-encoding")
# Envoy control headers a client must not set: routing, retries and timeouts are the gateway's.
_ENVOY_CONTROLS = (
    ROUTE_HEADER,
    MODEL_ROUTE_HEADER,
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-max-retries",
    "x-envoy-retry-on",
    "x-envoy-retry-grpc-on",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-upstream-alt-stat-name",
)

Recorder = Callable[[usage_pb2.UsageRecord], None]


class Exchange:
    __slots__ = (
        "_config",
        "_record",
        "body_stream",
        "created",
        "credits",
        "endpoint",
        "error_code",
        "finished",
        "include_usage",
        "key",
        "model",
        "model_requested",
        "path",
        "request_body",
        "request_id",
        "started",
        "status",
        "stream",
        "stream_translator",
        "ttft",
        "usage",
    )

    def __init__(self, config: GatewayConfig | None, record: Recorder) -> None:
        self._config = config
        self._record = record
        self.started = time.time()
        self.created = int(self.started)
        self.request_id = ""
        self.path = ""
        self.endpoint: Endpoint | None = None
        self.key: ApiKey | None = None
        self.model: Model | None = None
        self.model_requested = ""
        self.request_body: dict[str, Any] = {}
        self.stream = False
        self.include_usage = False
        self.body_stream = False
        self.stream_translator: StreamTranslator | None = None
        self.status = 0
        self.usage: Usage | None = None
        self.credits = ZERO
        self.error_code = ""
        self.ttft = 0.0
        self.finished = False

    # -- request -------------------------------------------------------------

    def on_request_headers(self, headers: ep.HttpHeaders) -> ep.ProcessingResponse:
        h = msg.header_map(headers, _REQUEST_HEADERS)
        self.request_id = h.get("x-request-id") or str(uuid.uuid4())
        self.path = h.get(":path", "/").split("?", 1)[0]
        method = h.get(":method", "GET")
        try:
            config = self._require_config()
            if self.path == "/v1/models" or self.path.startswith("/v1/models/"):
                return self._models(method, h.get("authorization"), config)
            endpoint = ENDPOINTS.get(self.path)
            if endpoint is None:
                raise GatewayError(404, "not_found", f"Unknown path {self.path}.")
            if method != "POST":
                raise GatewayError(405, "method_not_allowed", f"{self.path} accepts POST only.")
            self.key = authenticate(h.get("authorization"), config)
            self.endpoint = endpoint
            if headers.end_of_stream:
                raise GatewayError(400, "invalid_json", "The request body is empty.")
        except GatewayError as err:
            return self._fail(err)
        return msg.request_headers(remove=_ENVOY_CONTROLS)

    async def on_request_body(self, body: ep.HttpBody) -> ep.ProcessingResponse:
        try:
            return await self._route(body.body)
        except GatewayError as err:
            return self._fail(err)

    async def _route(self, raw: bytes) -> ep.ProcessingResponse:
        assert self.key is not None and self.endpoint is not None
        config = self._require_config()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise GatewayError(400, "invalid_json", f"The request body is not valid JSON: {exc}.") from None
        if not isinstance(body, dict):
            raise GatewayError(400, "invalid_json", "The request body must be a JSON object.")
        slug = body.get("model")
        if not isinstance(slug, str) or not slug:
            raise GatewayError(400, "invalid_request", "'model' is required.", param="model")
        self.model_requested = slug
        self.request_body = body
        model = config.models.get(slug)
        if model is None:
            raise GatewayError(404, "model_not_found", f"The model '{slug}' does not exist.", param="model")
        if not self.key.workspace.allows(slug):
            raise GatewayError(
                403, "model_not_allowed", f"This workspace may not use the model '{slug}'.", param="model"
            )
        self.model = model
        if self.endpoint is Endpoint.CHAT and body.get("stream") is True:
            self.stream = True
            options = body.get("stream_options")
            self.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        provider = model.provider
        translator = provider.translator
        urls = translator.media_urls(self.endpoint, body)
        media = await fetch_media(urls) if urls else {}
        upstream = translator.request(
            self.endpoint,
            body,
            Target(provider.kind, provider.base_path, provider.api_key, model.upstream_model, media),
        )
        set_headers = [
            (":path", upstream.path),
            (":authority", provider.host),
            (ROUTE_HEADER, provider.cluster),
            ("content-length", str(len(upstream.body))),
            *upstream.headers.items(),
        ]
        if slug in config.routes:  # Envoy's route for this model carries its timeouts
            set_headers.append((MODEL_ROUTE_HEADER, slug))
        remove = [h for h in _STRIP_UPSTREAM if h not in upstream.headers]
        return msg.request_body(upstream.body, set_headers, remove)

    # -- response ------------------------------------------------------------

    def on_response_headers(self, headers: ep.HttpHeaders) -> ep.ProcessingResponse:
        h = msg.header_map(headers, _RESPONSE_HEADERS)
        self.status = int(h.get(":status", "0") or 0)
        local_reply = h.get(LOCAL_REPLY_HEADER)
        if local_reply is not None or self.model is None:
            # Envoy's own failure (timeout, reset, ...): already in the envelope.
            self.status = self.status or 502
            self.error_code = local_reply or "upstream_error"
            self._finish()
            return msg.response_headers(remove=(LOCAL_REPLY_HEADER,))
        if (
            self.stream
            and self.status == 200
            and h.get("content-type", "").startswith("text/event-stream")
            and not headers.end_of_stream
        ):
            self.body_stream = True
            self.stream_translator = self.model.provider.translator.stream(self._response_context())
            return msg.response_headers(
                set_headers=(("x-model-used", self.model.slug),),
                remove=("content-length",),
                stream_body=True,
            )
        if headers.end_of_stream:
            return self._buffered_reply(b"", as_headers=True)
        return msg.response_headers()

    def on_response_body(self, body: ep.HttpBody) -> ep.ProcessingResponse:
        if self.finished and not self.body_stream:
            return msg.response_body(None)
        if self.body_stream:
            return self._stream_chunk(body.body, body.end_of_stream)
        return self._buffered_reply(body.body, as_headers=False)

    def _buffered_reply(self, raw: bytes, *, as_headers: bool) -> ep.ProcessingResponse:
        assert self.model is not None and self.endpoint is not None and self.key is not None
        translated = self.model.provider.translator.response(
            self.endpoint, self.status, raw, self._response_context()
        )
        self.status = translated.status
        headers = [("x-model-used", self.model.slug), ("content-length", str(len(translated.body)))]
        if translated.status < 400:
            self.usage = translated.usage or Usage()
            self.credits = self._charge(self.usage)
            headers.append(("x-credits-used", format_credits(self.credits)))
        else:
            self.error_code = translated.error_code or "upstream_error"
            headers.append(("content-type", "application/json"))
            headers.append((":status", str(translated.status)))
        self._finish()
        body = None if translated.body is raw else translated.body
        if as_headers:
            return msg.response_headers(set_headers=headers)
        return msg.response_body(body, set_headers=headers)

    def _stream_chunk(self, chunk: bytes, end_of_stream: bool) -> ep.ProcessingResponse:
        st = self.stream_translator
        assert st is not None and self.model is not None
        if self.finished:  # bytes after [DONE]: nothing more goes to the client
            return msg.response_body(b"" if chunk else None)
        out = st.feed(chunk) if chunk else b""
        if end_of_stream:
            out += st.finish()
        if out and not self.ttft:
            self.ttft = time.time()
        if st.done or end_of_stream:
            if not st.done and st.error_code is None:
                st.error_code = "upstream_error"
                out += _sse(envelope(502, "upstream_error", "The provider ended the stream early."))
            self.usage = st.usage or Usage()
            if st.error_code:
                self.error_code = st.error_code
            else:
                self.credits = self._charge(self.usage)
                out += _sse(self._credits_chunk(st.response_id))
            out += b"data: [DONE]\n\n"
            self._finish()
        return msg.response_body(None if out is chunk else out)

    def _credits_chunk(self, response_id: str) -> bytes:
        assert self.model is not None
        head = orjson.dumps(
            {
                "id": response_id or "chatcmpl-" + self.request_id,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": self.model.slug,
                "choices": [],
            }
        )
        # The amount goes in as a JSON number written from the exact decimal.
        return head[:-1] + b',"credits_used":' + format_credits(self.credits).encode() + b"}"

    # -- helpers -------------------------------------------------------------

    def _response_context(self) -> ResponseContext:
        assert self.model is not None
        return ResponseContext(
            self.model.slug, self.model.upstream_model, self.created, self.include_usage, self.request_body
        )

    def _charge(self, usage: Usage) -> Decimal:
        assert self.model is not None and self.key is not None
        return credits(usage, self.model.prices, self.key.workspace.price_multiplier)

    def _require_config(self) -> GatewayConfig:
        if self._config is None:
            raise GatewayError(503, "upstream_unavailable", "The gateway has no configuration yet.")
        return self._config

    def _models(self, method: str, authorization: str | None, config: GatewayConfig) -> ep.ProcessingResponse:
        if method != "GET":
            raise GatewayError(405, "method_not_allowed", f"{self.path} accepts GET only.")
        # Listing models is not metered: no usage record.
        key = authenticate(authorization, config)
        status, body = catalog_responses.models(self.path, key, config)
        self._finish()
        return msg.immediate(status, body, (("x-request-id", self.request_id),))

    def _fail(self, err: GatewayError) -> ep.ProcessingResponse:
        self.status = err.status
        self.error_code = err.code
        self._finish()
        headers: list[tuple[str, str]] = [("x-request-id", self.request_id)]
        if err.retry_after is not None:
            headers.append(("retry-after", str(err.retry_after)))
        return msg.immediate(err.status, err.body(), headers)

    def _finish(self) -> None:
        """Emit the usage record, once, for an authenticated request."""
        if self.finished:
            return
        self.finished = True
        if self.key is None:
            return
        self._record(self.usage_record())

    def abort(self) -> None:
        """The stream ended without a response (client gone, Envoy reset): record what we know."""
        if not self.finished:
            if not self.status or (self.body_stream and not self.error_code):
                self.status = 499
                self.error_code = "client_closed_request"
            if self.body_stream and self.stream_translator is not None:
                self.usage = self.stream_translator.usage
            self._finish()

    def usage_record(self) -> usage_pb2.UsageRecord:
        assert self.key is not None
        usage = self.usage or Usage()
        now = time.time()
        return usage_pb2.UsageRecord(
            request_id=self.request_id,
            started_at_ms=int(self.started * 1000),
            workspace_id=self.key.workspace.id,
            member_id=self.key.member_id,
            key_id=self.key.id,
            endpoint=self.path,
            model_requested=self.model_requested,
            model_used=self.model.slug if self.model else "",
            provider=self.model.provider.name if self.model else "",
            status=self.status,
            input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            output_tokens=usage.output_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            credits=format_credits(self.credits),
            latency_ms=(now - self.started) * 1000,
            ttft_ms=(self.ttft - self.started) * 1000 if self.ttft else 0.0,
            stream=self.stream,
            error_code=self.error_code if self.status >= 400 else "",
        )


def _sse(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"
