"""One HTTP request through the gateway, across its ext_proc messages.

Envoy's listener filter sends, in order: request headers, request body
(buffered), response headers, response body (buffered, or chunk by chunk for
SSE). Each ``on_*`` method answers one of them. All state lives on the
instance, so every ext_proc stream is self-contained and any ext_proc process
can serve it.

The request side authenticates, resolves the model, claims the idempotency
key and admits the request against the workspace's limits. A model without
fallbacks is translated here (one attempt); a model with a fallback chain is
sent to its chain cluster untouched, and Envoy's upstream filter translates
each attempt (ext_proc/attempt.py). Either way the response side is here:
it learns which target answered, translates the answer back to OpenAI's
shape, charges it and records its usage.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from infery_proto.v1 import usage_pb2
from infery_proto.wire import (
    ATTEMPT_METADATA,
    CREDITS_USED_HEADER,
    ENDPOINT_FIELD,
    FALLBACK_FROM_HEADER,
    GRANT_FIELD,
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENT_REPLAYED_HEADER,
    LOCAL_REPLY_HEADER,
    MODEL_ROUTE_HEADER,
    MODEL_USED_HEADER,
    REQUEST_ID_HEADER,
    RETRY_AFTER_HEADER,
    ROUTE_HEADER,
    SERVED_HEADER,
)

from ext_proc import attempt_grant, catalog_responses, endpoints, header_policy
from ext_proc import envoy_messages as msg
from ext_proc.attempt import upstream_request
from ext_proc.auth import authenticate
from ext_proc.config import ApiKey, GatewayConfig, Model, Route
from ext_proc.endpoints.base import Endpoint
from ext_proc.errors import GatewayError, envelope
from ext_proc.idempotency import Idempotency, Proceed, StoredResponse, should_store
from ext_proc.limits import Admission, Limiter
from ext_proc.media_fetch import MediaPolicy
from ext_proc.metering import ZERO, credits, format_credits
from ext_proc.token_estimate import tokens_for_chars
from ext_proc.translators import sse, translator_for
from ext_proc.translators.base import ResponseContext, StreamTranslator, Usage
from ext_proc.translators.chat_documents import usage_doc

log = logging.getLogger("infery.ext_proc")


def new_request_id() -> str:
    """32 hex digits: the time in milliseconds, then 80 random bits.

    Time-ordered ids land at the end of the usage table's primary-key index instead of
    on a random page of it, which makes each batch insert touch a few pages rather than
    one per record (SQLite and PostgreSQL alike). The bits need to be unique, not secret
    (the id is echoed to the client), so they come from ``random``, seeded from the OS
    per process, not from a ``getrandom`` system call per request.
    """
    return f"{time.time_ns() // 1_000_000:012x}{random.getrandbits(80):020x}"


_REQUEST_HEADERS = frozenset({":path", ":method", "authorization", IDEMPOTENCY_KEY_HEADER})
_RESPONSE_HEADERS = frozenset({":status", "content-type", LOCAL_REPLY_HEADER, SERVED_HEADER})
# Headers a client must not set: routing, retries and timeouts are the gateway's.
_CONTROL_HEADERS = (
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
_CONTROL_SET = frozenset(_CONTROL_HEADERS)
# How long a chain's attempts may start when its route sets no total timeout (Envoy then
# allows INFERY_REQUEST_TIMEOUT_S, 600 s by default). Generous: a grant never leaves
# Envoy and ext_proc, the expiry only bounds the use of one that somehow would.
_GRANT_LIFETIME_S = 3600.0
# Response headers kept with an idempotent response and replayed with it.
_REPLAYED_HEADERS = ("content-type", MODEL_USED_HEADER, FALLBACK_FROM_HEADER, CREDITS_USED_HEADER)

Recorder = Callable[[usage_pb2.UsageRecord], None]
_TOO_LARGE = "The provider's answer is larger than this gateway buffers (INFERY_MAX_REQUEST_BYTES)."


@dataclass(slots=True)
class Services:
    """What an exchange uses beyond the configuration; one set per ext_proc process."""

    record: Recorder
    limiter: Limiter
    idempotency: Idempotency
    media: MediaPolicy = field(default_factory=MediaPolicy)  # which media URLs may be fetched, how many
    max_sse_event_bytes: int = sse.DEFAULT_MAX_EVENT_BYTES  # INFERY_MAX_SSE_EVENT_BYTES
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    def later(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run work the client need not wait for, keeping a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


class Exchange:
    __slots__ = (
        "_config",
        "_services",
        "admission",
        "body_stream",
        "chain",
        "chain_targets",
        "client_headers",
        "created",
        "credits",
        "endpoint",
        "error_code",
        "fallback_from",
        "finished",
        "idempotency_key",
        "idempotency_token",
        "include_usage",
        "key",
        "model",
        "model_requested",
        "path",
        "replayed",
        "request_body",
        "request_id",
        "started",
        "status",
        "stream",
        "stream_translator",
        "transcript",
        "ttft",
        "usage",
    )

    def __init__(self, config: GatewayConfig | None, services: Services) -> None:
        self._config = config
        self._services = services
        self.started = time.time()
        self.created = int(self.started)
        self.request_id = ""
        self.path = ""
        self.client_headers: tuple[str, ...] = ()
        self.endpoint: Endpoint | None = None
        self.key: ApiKey | None = None
        self.model: Model | None = None  # the model that serves: the requested one, or a fallback
        self.model_requested = ""
        self.chain: Route | None = None
        self.chain_targets: tuple[str, ...] = ()  # the chain's targets this workspace may use
        self.fallback_from = ""
        self.request_body: dict[str, Any] = {}
        self.stream = False
        self.include_usage = False
        self.body_stream = False
        self.stream_translator: StreamTranslator | None = None
        self.idempotency_key = ""
        self.idempotency_token: str | None = None
        # What the client got: for an idempotent replay, and (streams) to count what was served.
        self.transcript: list[bytes] | None = None
        self.admission: Admission | None = None
        self.replayed = False
        self.status = 0
        self.usage: Usage | None = None
        self.credits = ZERO
        self.error_code = ""
        self.ttft = 0.0
        self.finished = False

    # -- request -------------------------------------------------------------

    def on_request_headers(self, headers: ep.HttpHeaders) -> ep.ProcessingResponse:
        h = msg.header_map(headers, _REQUEST_HEADERS)
        # What the request carries on once the control headers below are gone.
        self.client_headers = tuple(n for n in header_policy.names(headers) if n not in _CONTROL_SET)
        # Our own id, whatever the client sent: it keys the usage record (one per request).
        self.request_id = new_request_id()
        self.path = h.get(":path", "/").split("?", 1)[0]
        method = h.get(":method", "GET")
        try:
            config = self._require_config()
            if self.path == "/v1/models" or self.path.startswith("/v1/models/"):
                return self._models(method, h.get("authorization"), config)
            endpoint = endpoints.by_path(self.path)
            if endpoint is None:
                raise GatewayError(404, "not_found", f"Unknown path {self.path}.")
            if method not in endpoint.methods:
                allowed = " or ".join(sorted(endpoint.methods))
                raise GatewayError(405, "method_not_allowed", f"{self.path} accepts {allowed} only.")
            self.key = authenticate(h.get("authorization"), config)
            self.endpoint = endpoint
            self.idempotency_key = h.get(IDEMPOTENCY_KEY_HEADER, "")
            if headers.end_of_stream:
                raise GatewayError(400, "invalid_json", "The request body is empty.")
        except GatewayError as err:
            return self._fail(err)
        return msg.request_headers(
            set_headers=((REQUEST_ID_HEADER, self.request_id),), remove=_CONTROL_HEADERS
        )

    async def on_request_body(self, body: ep.HttpBody) -> ep.ProcessingResponse:
        try:
            return await self._admit_and_route(body.body)
        except GatewayError as err:  # _fail settles an admission made before the failure
            await self._release_idempotency()
            return self._fail(err)

    async def _admit_and_route(self, raw: bytes) -> ep.ProcessingResponse:
        assert self.key is not None and self.endpoint is not None
        config = self._require_config()
        body = _parse_body(raw)
        slug = body.get("model")
        if not isinstance(slug, str) or not slug:
            raise GatewayError(400, "invalid_request", "'model' is required.", param="model")
        self.model_requested = slug
        model = config.models.get(slug)
        if model is None:
            raise GatewayError(404, "model_not_found", f"The model '{slug}' does not exist.", param="model")
        if not self.key.workspace.allows(slug):
            raise GatewayError(
                403, "model_not_allowed", f"This workspace may not use the model '{slug}'.", param="model"
            )
        self.endpoint.check(body)  # the API's own refusals, the same for every provider
        self.model = model
        self.request_body = body
        self.stream, self.include_usage = self.endpoint.streaming(body)

        # Admitted first: a replay counts against the limits too (cheap, not free: it settles
        # at 0 tokens and 0 credits), and nothing is fetched for a request over its limits.
        workspace = self.key.workspace
        estimate = self.endpoint.reservation(body) if workspace.tpm else 0  # only a token limit needs it
        self.admission = await self._services.limiter.admit(workspace, estimate)

        if self.idempotency_key:
            fingerprint = hashlib.sha256(b"POST " + self.path.encode() + b"\n" + raw).digest()
            outcome = await self._services.idempotency.begin(
                workspace.id, self.idempotency_key, fingerprint, self._idempotency_scope()
            )
            if not isinstance(outcome, Proceed):
                return self._replay(outcome.stored)
            self.idempotency_token = outcome.token
            self.transcript = []

        route = config.routes.get(slug)
        if route is not None and route.cluster:
            # A fallback chain: Envoy walks it, the upstream filter translates each attempt.
            self.chain = route
            self.chain_targets, cluster = route.allowed_chain(workspace)
            upstream_body = None
            # A variant cluster has an Envoy route of its own, of the same name.
            set_headers = [
                (ROUTE_HEADER, cluster),
                (MODEL_ROUTE_HEADER, slug if cluster == route.cluster else cluster),
            ]
            remove: list[str] = []
            # What each attempt needs, where no provider sees it (ext_proc/attempt.py).
            metadata: msg.Metadata = (
                ATTEMPT_METADATA,
                {GRANT_FIELD: self._attempt_grant(config, route), ENDPOINT_FIELD: self.path},
            )
        else:
            metadata = None
            upstream_body, set_headers, remove = await upstream_request(
                model, self.endpoint, body, self.client_headers, self._services.media
            )
            set_headers.append((ROUTE_HEADER, model.provider.cluster))
            if route is not None:  # the model's own Envoy route carries its timeouts and retries
                set_headers.append((MODEL_ROUTE_HEADER, slug))
        return msg.request_body(upstream_body, set_headers, remove, metadata=metadata)

    def _idempotency_scope(self) -> str:
        """Whose replays these are: the member's, unless the workspace shares them."""
        assert self.key is not None
        return "" if self.key.workspace.share_idempotent_replays else self.key.member_id

    def _attempt_grant(self, config: GatewayConfig, route: Route) -> str:
        """Lets the chain's upstream attempts act for this request, and no other stream."""
        assert self.key is not None
        if not config.attempt_grant_key:
            raise GatewayError(503, "upstream_unavailable", "The gateway has no attempt key yet.")
        lifetime = route.total_timeout_s if route.total_timeout_s > 0 else _GRANT_LIFETIME_S
        grant = attempt_grant.Grant(self.request_id, self.key.workspace.id, self.key.member_id)
        return attempt_grant.sign(config.attempt_grant_key, grant, int(self.started + lifetime) + 5)

    def _replay(self, stored: StoredResponse) -> ep.ProcessingResponse:
        """The first request's response, again: no upstream call, no charge (but it was admitted)."""
        self.replayed = True
        self.status = stored.status
        headers = dict(stored.headers)
        self.model = self._config.models.get(headers.get(MODEL_USED_HEADER, "")) if self._config else None
        self._finish()
        return self._answer(stored.status, stored.body, stored.headers)

    # -- response ------------------------------------------------------------

    async def on_response_headers(self, headers: ep.HttpHeaders) -> ep.ProcessingResponse:
        h = msg.header_map(headers, _RESPONSE_HEADERS)
        self.status = int(h.get(":status", "0") or 0)
        rate_headers = self.admission.headers if self.admission else []
        local_reply = h.get(LOCAL_REPLY_HEADER)
        if local_reply is not None or self.model is None:
            # The gateway's own failure (timeout, reset, every target down): already in the
            # envelope. A chain's still gets the targets it tried, in the body phase.
            self.status = self.status or 502
            self.error_code = local_reply or "upstream_error"
            if self.chain is None or headers.end_of_stream:
                await self._finish_async()
            return msg.response_headers(
                set_headers=rate_headers, remove=_response_removals(headers, rate_headers)
            )
        if self.chain is not None:
            self._note_served(h.get(SERVED_HEADER, ""))
        served = [(MODEL_USED_HEADER, self.model.slug), *rate_headers]
        if self.fallback_from:
            served.append((FALLBACK_FROM_HEADER, self.fallback_from))
        remove = _response_removals(headers, served)
        if (
            self.stream
            and self.status == 200
            and h.get("content-type", "").startswith("text/event-stream")
            and not headers.end_of_stream
        ):
            self.body_stream = True
            assert self.endpoint is not None  # set with self.stream, by the endpoint
            translator = translator_for(self.endpoint, self.model.provider.wire_format)
            self.stream_translator = translator.stream(self._response_context())
            if self.transcript is None:
                self.transcript = []
            return msg.response_headers(
                set_headers=served, remove=("content-length", *remove), stream_body=True
            )
        if headers.end_of_stream:
            return await self._buffered_reply(b"", served, as_headers=True)
        return msg.response_headers(set_headers=served, remove=remove)

    def _note_served(self, slug: str) -> None:
        """A chain's answer: which target gave it decides how it is read and charged."""
        model = self._config.models.get(slug) if (self._config and slug) else None
        if model is not None and model is not self.model:
            self.fallback_from = self.model_requested
            self.model = model

    async def on_response_body(self, body: ep.HttpBody) -> ep.ProcessingResponse:
        if self.finished and not self.body_stream:
            return msg.response_body(None)
        if self.chain is not None and self.error_code and not self.body_stream:  # local reply, above
            out = self._with_attempts(body.body)
            await self._finish_async()
            return msg.response_body(out, set_headers=(("content-length", str(len(out))),))
        if self.body_stream:
            return await self._stream_chunk(body.body, body.end_of_stream)
        if not body.end_of_stream:  # only the first part of an answer over the buffer limit
            await self._release_idempotency()
            return self._fail(GatewayError(502, "upstream_error", _TOO_LARGE))
        return await self._buffered_reply(body.body, [], as_headers=False)

    async def _buffered_reply(
        self, raw: bytes, headers: list[tuple[str, str]], *, as_headers: bool
    ) -> ep.ProcessingResponse:
        assert self.model is not None and self.endpoint is not None and self.key is not None
        translated = translator_for(self.endpoint, self.model.provider.wire_format).response(
            self.status, raw, self._response_context()
        )
        self.status = translated.status
        out = [*headers, ("content-length", str(len(translated.body)))]
        if translated.status < 400:
            self.usage = translated.usage
            if self.usage is None or self.usage.rejected:
                chars = _completion_chars(self.endpoint, translated.body)
                self.usage = self._estimate(self.usage, chars, served=True)
            self.credits = self._charge(self.usage)
            out.append((CREDITS_USED_HEADER, format_credits(self.credits)))
        else:
            self.error_code = translated.error_code or "upstream_error"
            if self.chain is not None:
                translated.body = self._with_attempts(translated.body)
                out[-1] = ("content-length", str(len(translated.body)))
            out += [("content-type", "application/json"), (":status", str(translated.status))]
        if self.idempotency_token is not None and self.transcript is not None:
            self.transcript.append(translated.body)
        await self._finish_async(out)
        if as_headers:
            # The provider sent no body, so no body message will follow: answer in full now.
            kept = [(k, v) for k, v in out if k not in (":status", "content-length")]
            return msg.immediate(translated.status, translated.body, kept)
        body = None if translated.body is raw else translated.body
        return msg.response_body(body, set_headers=out)

    async def _stream_chunk(self, chunk: bytes, end_of_stream: bool) -> ep.ProcessingResponse:
        st = self.stream_translator
        assert st is not None and self.model is not None
        if self.finished:  # bytes after [DONE]: nothing more goes to the client
            return msg.response_body(b"" if chunk else None)
        out = st.feed(chunk) if chunk else b""
        overflowed = st.overflowed
        if end_of_stream and not overflowed:
            out += st.finish()
        if out and not self.ttft:
            self.ttft = time.time()
        if st.done or end_of_stream or overflowed:
            # The last chunk before [DONE] carries the charge: the translator's held final
            # chunk, usage chunk or error event, or the gateway's own error ending the stream.
            last = st.held
            ended = None
            if overflowed:
                limit = self._services.max_sse_event_bytes
                ended = f"The provider sent a stream event over {limit} bytes; the stream was cut there."
            elif not st.done and st.error_code is None:
                st.error_code = "upstream_error"
                ended = "The provider ended the stream early."
            if ended is not None:
                if last is not None:
                    out += sse.encode(last)
                last = envelope(502, "upstream_error", ended)
                self.error_code = "upstream_error"
            elif st.error_code:
                self.error_code = st.error_code
            assert self.transcript is not None
            self.transcript.append(out)
            self._charge_stream(last)
            if last is None:
                last = self._final_chunk(st.response_id)
            tail = sse.encode(_with_credits(last, self.credits)) + b"data: [DONE]\n\n"
            out += tail
            self.transcript.append(tail)
            await self._finish_async()
        elif out:
            assert self.transcript is not None
            self.transcript.append(out)
        return msg.response_body(None if out is chunk else out)

    def _charge_stream(self, last: bytes | None = None) -> None:
        """Charge what the stream served: the provider's usage when it completed with valid usage,
        else the estimate from the request and the text the client received (``last``, the
        final chunk about to go out, included)."""
        st = self.stream_translator
        assert st is not None and self.endpoint is not None
        provider = st.usage
        if (
            st.done
            and not st.error_code
            and not st.overflowed
            and provider is not None
            and not provider.rejected
        ):
            self.usage = provider
        else:
            clean = st.done and not st.error_code and not st.overflowed
            sent = self.transcript or []
            chars = _streamed_chars(self.endpoint, [*sent, sse.encode(last)] if last is not None else sent)
            self.usage = self._estimate(provider, chars, served=clean or chars > 0)
        self.credits = self._charge(self.usage)

    def _estimate(self, provider: Usage | None, chars: int, *, served: bool) -> Usage:
        """What to charge without (valid, complete) provider usage (ext_proc/token_estimate.py).

        The provider's own counts so far are kept where they are valid (its prompt tokens, and
        its output tokens when more than the text counted); the request's estimate stands in for
        missing prompt tokens, the delivered text's for output. Nothing served: nothing charged.
        """
        assert self.endpoint is not None
        rejected = provider.rejected if provider is not None else ""
        valid = provider if provider is not None and not rejected else None
        if not served:
            return Usage(rejected=rejected)
        output = tokens_for_chars(chars)
        if valid is not None:
            return Usage(
                input_tokens=valid.input_tokens or self.endpoint.input_tokens(self.request_body),
                cached_input_tokens=valid.cached_input_tokens,
                output_tokens=max(valid.output_tokens, output),
                reasoning_tokens=valid.reasoning_tokens,
                images=valid.images,
                estimated=True,
            )
        images = provider.images if provider is not None else 0
        prompt = self.endpoint.input_tokens(self.request_body)
        return Usage(prompt, 0, output, 0, images, estimated=True, rejected=rejected)

    def _final_chunk(self, response_id: str) -> bytes:
        """The last chunk when the provider gave none to complete: the usage chunk the client
        asked for, else a final ``finish_reason`` chunk (never an empty ``choices`` it did not expect)."""
        assert self.model is not None
        doc: dict[str, Any] = {
            "id": response_id or "chatcmpl-" + self.request_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model.slug,
            "choices": [],
        }
        if self.include_usage:
            doc["usage"] = usage_doc(self.usage or Usage())
        else:
            doc["choices"] = [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
        return orjson.dumps(doc)

    def _with_attempts(self, body: bytes) -> bytes:
        """A chain's final error names every target it tried, and those the workspace may not use."""
        assert self.chain is not None
        try:
            doc = orjson.loads(body)
            note = "fallback chain: " + ", ".join(self.chain_targets)
            excluded = [t for t in self.chain.fallbacks if t not in self.chain_targets]
            if excluded:
                note += "; not allowed for this workspace: " + ", ".join(excluded)
            doc["error"]["message"] = f"{doc['error']['message']} ({note})"
            return orjson.dumps(doc)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return body

    # -- helpers -------------------------------------------------------------

    def _response_context(self) -> ResponseContext:
        assert self.model is not None
        return ResponseContext(
            self.model.slug,
            self.model.upstream_model,
            self.created,
            self.include_usage,
            self.request_body,
            self._services.max_sse_event_bytes,
        )

    def _charge(self, usage: Usage) -> Decimal:
        assert self.model is not None and self.key is not None and self.endpoint is not None
        return credits(usage, self.model.prices, self.key.workspace.price_multiplier, self.endpoint.meters)

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
        return self._answer(status, body)

    def _fail(self, err: GatewayError) -> ep.ProcessingResponse:
        self.status = err.status
        self.error_code = err.code
        self._finish()
        headers: list[tuple[str, str]] = list(getattr(err, "headers", ()))
        if err.retry_after is not None:
            headers.append((RETRY_AFTER_HEADER, str(err.retry_after)))
        return self._answer(err.status, err.body(), headers)

    def _answer(
        self, status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()
    ) -> ep.ProcessingResponse:
        """Answer the client now, under this request's id; nothing goes upstream."""
        return msg.immediate(status, body, [*headers, (REQUEST_ID_HEADER, self.request_id)])

    async def _release_idempotency(self) -> None:
        if self.idempotency_token is not None and self.key is not None:
            token, self.idempotency_token = self.idempotency_token, None
            await self._services.idempotency.release(
                self.key.workspace.id, self.idempotency_key, token, self._idempotency_scope()
            )

    async def _finish_async(self, headers: list[tuple[str, str]] | None = None) -> None:
        """Finish, and keep (or let go of) the idempotency key before the client hears the end."""
        if self.idempotency_token is not None and self.key is not None:
            complete = not self.error_code or not self.body_stream
            if complete and should_store(self.status):
                stored = StoredResponse(
                    self.status,
                    _replayable(
                        headers or [], self.model, self.fallback_from, self.body_stream, self.credits
                    ),
                    b"".join(self.transcript or ()),
                    self.body_stream,
                )
                token, self.idempotency_token = self.idempotency_token, None
                await self._services.idempotency.complete(
                    self.key.workspace.id, self.idempotency_key, stored, token, self._idempotency_scope()
                )
            else:
                await self._release_idempotency()
        self._finish()

    def _finish(self) -> None:
        """Settle the limits and emit the usage record, once, for an authenticated request."""
        if self.finished:
            return
        self.finished = True
        if self.key is None:
            return
        if self.admission is not None and self.admission.needs_settling:
            usage = self.usage or Usage()
            self._services.later(
                self._services.limiter.settle(
                    self.admission, usage.input_tokens + usage.output_tokens, self.credits
                )
            )
        self._services.record(self.usage_record())

    def abort(self) -> None:
        """The stream ended without a response (client gone, Envoy reset): record what we know."""
        if self.finished:
            return
        if not self.status or (self.body_stream and not self.error_code):
            # Envoy closed the stream mid-way: the client left, or the provider reset
            # the connection after the first byte (Envoy then resets the client too).
            self.status = 499
            self.error_code = "stream_interrupted"
        if self.body_stream and self.stream_translator is not None and self.model is not None:
            self._charge_stream()  # what reached the client is charged, whoever ended the stream
        self._services.later(self._release_idempotency())
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
            fallback_from=self.fallback_from,
            status=self.status,
            input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            output_tokens=usage.output_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            credits=format_credits(self.credits),
            latency_ms=(now - self.started) * 1000,
            ttft_ms=(self.ttft - self.started) * 1000 if self.ttft else 0.0,
            idempotent_replay=self.replayed,
            stream=self.stream,
            error_code=self.error_code,  # also set when a stream failed after its 200 headers
            usage_estimated=usage.estimated,
            usage_rejected=usage.rejected,
        )


def _response_removals(headers: ep.HttpHeaders, setting: list[tuple[str, str]]) -> list[str]:
    return header_policy.response_removals(header_policy.names(headers), {name for name, _ in setting})


def _parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, "invalid_json", f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "invalid_json", "The request body must be a JSON object.")
    return body


def _replayable(
    headers: list[tuple[str, str]], model: Model | None, fallback_from: str, stream: bool, charged: Decimal
) -> list[tuple[str, str]]:
    """The headers an idempotent replay repeats, plus its marker."""
    kept = {k: v for k, v in headers if k in _REPLAYED_HEADERS}
    if stream:
        kept["content-type"] = "text/event-stream"
    kept.setdefault("content-type", "application/json")
    if model is not None:
        kept.setdefault(MODEL_USED_HEADER, model.slug)
    if fallback_from:
        kept.setdefault(FALLBACK_FROM_HEADER, fallback_from)
    if not stream and CREDITS_USED_HEADER not in kept and charged:
        kept[CREDITS_USED_HEADER] = format_credits(charged)
    return [*kept.items(), (IDEMPOTENT_REPLAYED_HEADER, "true")]


def _with_credits(chunk: bytes, charged: Decimal) -> bytes:
    """``chunk`` (a JSON object) with ``credits_used``, a JSON number written from the exact decimal."""
    return chunk[:-1] + b',"credits_used":' + format_credits(charged).encode() + b"}"


def _completion_chars(endpoint: Endpoint, body: bytes) -> int:
    """Text characters of a translated (OpenAI-shaped) answer."""
    try:
        return endpoint.served_chars(orjson.loads(body))
    except orjson.JSONDecodeError:
        return 0


def _streamed_chars(endpoint: Endpoint, transcript: Iterable[bytes]) -> int:
    """Text characters of the chunks a stream delivered, read back only when they are to be charged."""
    reader = sse.SSEBuffer(max_event_bytes=2**62)
    chars = 0
    for piece in transcript:
        for event in reader.feed(piece):
            if event.data != b"[DONE]":
                try:
                    chars += endpoint.served_chars(orjson.loads(event.data))
                except orjson.JSONDecodeError:
                    continue
    return chars
