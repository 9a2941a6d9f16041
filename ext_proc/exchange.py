"""One HTTP request through the gateway, across its ext_proc messages.

Envoy's listener filter sends, in order: request headers, request body
(buffered), response headers, response body (buffered, or chunk by chunk for
SSE). Each ``on_*`` method answers one of them (the :class:`~ext_proc.processor.Processor`
phases). All state lives on the instance, so every ext_proc stream is
self-contained and any ext_proc process can serve it.

The request side authenticates, resolves the model, admits the request against
the workspace's limits and claims the idempotency key. A model without
fallbacks is translated here (one attempt); a model with a fallback chain is
sent to its chain cluster untouched, and Envoy's upstream filter translates
each attempt (ext_proc/attempt.py). Either way the response side is here:
it learns which target answered, translates the answer back to OpenAI's
shape (a stream through ext_proc/stream_answer.py) and charges it.

The request's life is an explicit state machine (ext_proc/lifecycle.py): each
phase moves it from one named state to the next, and every way out -- answered,
refused, failed, abandoned -- is one exit (:meth:`Exchange._exit`,
ext_proc/settlement.py) that charges, settles the limits, keeps or releases the
idempotency key and writes the usage record, once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from infery_proto import batch_assertion
from infery_proto.batch_assertion import BatchLine
from infery_proto.identity_assertion import Identity
from infery_proto.v1 import usage_pb2
from infery_proto.wire import (
    ATTEMPT_METADATA,
    BATCH_LINE_HEADER,
    BATCH_LINE_NOT_SENT,
    BATCH_RECOVER_HEADER,
    CHOICES_ERROR_HEADER,
    CHOICES_FAILED_HEADER,
    CREDITS_USED_HEADER,
    ENDPOINT_FIELD,
    FALLBACK_FROM_HEADER,
    GRANT_FIELD,
    IDEMPOTENCY_KEY_HEADER,
    LOCAL_REPLY_HEADER,
    MODEL_USED_HEADER,
    PARENT_REQUEST_HEADER,
    REQUEST_ID_HEADER,
    RETRY_AFTER_HEADER,
    ROUTE_HEADER,
    SERVED_HEADER,
    TRACEPARENT_FIELD,
)

from ext_proc import (
    attempt_grant,
    batch_gate,
    conversations,
    endpoints,
    extra_choices,
    file_refs,
    header_policy,
    parent_link,
    response_store,
    settlement,
    tracing,
)
from ext_proc import envoy_messages as msg
from ext_proc.audio_upload import DEFAULT_LOOKAHEAD_BYTES
from ext_proc.auth import authenticate, presented
from ext_proc.config import ApiKey, GatewayConfig, Model, Route
from ext_proc.endpoints import chat_completions
from ext_proc.endpoints.base import (
    Answer,
    Endpoint,
    HeadersReply,
    HeadersRequest,
    LastEvent,
    RequestBody,
    envelope,
)
from ext_proc.errors import GatewayError
from ext_proc.extra_calls import ExtraCalls, Listener
from ext_proc.idempotency import Idempotency, Proceed, StoredResponse
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
from ext_proc.media_fetch import MediaPolicy
from ext_proc.metering import ZERO, format_credits
from ext_proc.received import Body
from ext_proc.request_id import envoys_request_id, new_request_id, trace_reason
from ext_proc.response_store import ResponseStore
from ext_proc.settlement import Claim
from ext_proc.stream_answer import StreamAnswer
from ext_proc.translators import sse, translator_for
from ext_proc.translators.base import ResponseContext, Usage
from ext_proc.translators.base import TranslatedResponse as Translated
from ext_proc.upload_intake import UploadIntake
from ext_proc.upstream_request import form_upstream, upstream_request

if TYPE_CHECKING:
    from ext_proc.h2_grpc.server import Metadata
    from ext_proc.tracing import RequestTrace, Tracer

log = logging.getLogger("infery.ext_proc")


BATCH_LINE_SCOPE = "batch-lines"  # the idempotency scope of batch lines (``Exchange._idempotency_scope``)


# How long a chain's attempts may start when its route sets no total timeout (Envoy then
# allows INFERY_REQUEST_TIMEOUT_S, 600 s by default). Generous: a grant never leaves
# Envoy and ext_proc, the expiry only bounds the use of one that somehow would.
_GRANT_LIFETIME_S = 3600.0

Recorder = Callable[[usage_pb2.UsageRecord], None]
# The largest audio upload (OpenAI's own limit is 25 MB); INFERY_MAX_AUDIO_BYTES.
DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024  # INFERY_MAX_REQUEST_BYTES, Envoy's request buffer
_TOO_LARGE = "The provider's answer is larger than this gateway buffers (INFERY_MAX_REQUEST_BYTES)."


@dataclass(slots=True)
class Services:
    """What an exchange uses beyond the configuration; one set per ext_proc process."""

    record: Recorder
    limiter: Limiter
    idempotency: Idempotency
    media: MediaPolicy = field(default_factory=MediaPolicy)  # which media URLs may be fetched, how many
    max_sse_event_bytes: int = sse.DEFAULT_MAX_EVENT_BYTES  # INFERY_MAX_SSE_EVENT_BYTES
    files: file_refs.FilesService | None = (
        None  # where file_id parts (chat, Responses, Messages) are read (INFERY_FILES_SERVICE)
    )
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES  # INFERY_MAX_AUDIO_BYTES
    upload_lookahead: int = DEFAULT_LOOKAHEAD_BYTES  # INFERY_AUDIO_MODEL_LOOKAHEAD_BYTES
    # Envoy's request buffer (INFERY_MAX_REQUEST_BYTES): what a chain's router keeps for its retries.
    max_buffered_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    responses: ResponseStore | None = None  # the Responses API's kept responses (the control plane's)
    tracer: Tracer | None = None  # request traces (ext_proc/tracing.py); None: off, and no span work
    listener: Listener | None = None  # the gateway's own listener: emulated n > 1 (INFERY_LISTENER_URL)
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    def later(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run work the client need not wait for, keeping a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


class Exchange:
    """The listener's processor for one request; :attr:`state` says where it is (ext_proc/lifecycle.py)."""

    __slots__ = (
        "_config",
        "_services",
        "_trace_carrier",
        "admission",
        "answer",
        "batch_line",
        "chain",
        "chain_targets",
        "claim",
        "client_headers",
        "conversation",
        "created",
        "credential",
        "credits",
        "endpoint",
        "error_code",
        "extra",
        "fallback_from",
        "idempotency_key",
        "include_usage",
        "key",
        "model",
        "model_requested",
        "parent_request_id",
        "path",
        "recover_only",
        "replayed",
        "request_body",
        "request_id",
        "started",
        "state",
        "status",
        "stream",
        "trace",
        "transcript",
        "upload",
        "usage",
    )

    def __init__(
        self,
        config: GatewayConfig | None,
        services: Services,
        trace_carrier: Metadata = (),
    ) -> None:
        self._config = config
        self._services = services
        # The ext_proc stream's gRPC metadata, read for Envoy's trace context when tracing is on.
        self._trace_carrier = trace_carrier
        self.trace: RequestTrace | None = None  # the request's spans, when tracing is on
        self.state = NEW
        # The request, as the headers and the body phases learn it.
        self.started = time.time()
        self.created = int(self.started)
        self.request_id = ""
        self.path = ""
        self.client_headers: tuple[str, ...] = ()
        self.endpoint: Endpoint | None = None
        self.key: ApiKey | None = None
        self.batch_line: BatchLine | None = None  # a batch worker's line (ext_proc/batch_gate.py)
        self.idempotency_key = ""
        self.model_requested = ""
        self.request_body: dict[str, Any] = {}
        # Responses API: the whole input of a request continuing a kept response, items with ids
        # (what is kept with its answer); None: the request's own input.
        self.conversation: list[dict[str, Any]] | None = None
        self.stream = False
        self.include_usage = False
        # Where it goes: the model that serves (the requested one, or a chain's fallback).
        self.model: Model | None = None
        self.chain: Route | None = None
        self.chain_targets: tuple[str, ...] = ()  # the chain's targets this workspace may use
        self.fallback_from = ""
        # What it holds and owes until its exit (ext_proc/settlement.py).
        self.admission: Admission | None = None
        self.claim: Claim | None = None
        # Every byte the client got: for an idempotent replay, and (streams) to count what was served.
        self.transcript: list[bytes] | None = None
        self.answer: StreamAnswer | None = None  # a streamed answer, from its 200 headers on
        # What the client got.
        self.status = 0
        self.error_code = ""
        self.usage: Usage | None = None
        self.credits = ZERO
        self.replayed = False
        self.recover_only = False  # a batch finalizer's probe: answer from the line's key, never serve
        self.upload: UploadIntake | None = None  # an upload read as it passes (RequestBody.STREAMED)
        # The key the client authenticated with: an emulated n > 1 asks for its other choices
        # with it (ext_proc/extra_choices.py); and those calls, once made.
        self.credential = ""
        self.extra: ExtraCalls | None = None
        # An emulated n's extra choice: the client's request it serves (ext_proc/parent_link.py).
        self.parent_request_id = ""

    @property
    def finished(self) -> bool:
        """Settled: the request reached a final state."""
        return self.state in FINAL

    # -- request -------------------------------------------------------------

    def on_request_headers(
        self, headers: ep.HttpHeaders
    ) -> ep.ProcessingResponse | Awaitable[ep.ProcessingResponse] | None:
        """The answer to the headers; None for an upload, whose answer waits for its model; for an
        endpoint answered from the headers alone that needs I/O (the kept responses), a coroutine
        the caller awaits. Which endpoint, and what it needs, is the registry's (ext_proc/endpoints/)."""
        if self.state is not NEW:
            raise IllegalMove(self.state, RECEIVED)
        # What the gateway reads, and what the request carries on once the control headers are gone.
        h, self.client_headers = header_policy.read_client(headers)
        # Answered here in the headers phase (refused, the model list, a kept response), the request
        # keeps the id Envoy gave it: Envoy's access log and the answer's x-request-id can carry no
        # other (an immediate answer changes no request header). A request that goes on gets the
        # gateway's own id as it is received (below): it keys the usage record, one per request.
        self.request_id = envoys_request_id(h.get(REQUEST_ID_HEADER, ""))
        self.path = h.get(":path", "/").split("?", 1)[0]
        method = h.get(":method", "GET")
        tracer = self._services.tracer
        if tracer is not None:
            self._start_trace(tracer, method, h)
        try:
            config = self._require_config()
            endpoint = endpoints.by_path(self.path)
            if endpoint is None:
                raise GatewayError(404, "not_found", f"Unknown path {self.path}.")
            self.endpoint = endpoint  # its errors are in its API's shape from here on
            if method not in endpoint.methods:
                allowed = " or ".join(sorted(endpoint.methods))
                raise GatewayError(405, "method_not_allowed", f"{self.path} accepts {allowed} only.")
            if endpoint.request_body is RequestBody.HEADERS_ONLY:
                return self._headers_only(endpoint, method, h, config)
            line_credential = h.get(BATCH_LINE_HEADER)
            if line_credential is not None:
                # A batch worker's line: the batch's key, once per line (ext_proc/batch_gate.py).
                self.key, line = batch_gate.authenticate_line(line_credential, self.path, config)
                self.batch_line = line
                self.idempotency_key = batch_assertion.idempotency_key(line.batch_id, line.custom_id)
                self.recover_only = h.get(BATCH_RECOVER_HEADER) == "1"
            else:
                self.key = authenticate(h.get("authorization"), h.get("x-api-key"), config)
                self.idempotency_key = h.get(IDEMPOTENCY_KEY_HEADER, "")
                # The key as presented: the extra choices of an emulated n are asked with it.
                self.credential = presented(h.get("authorization"), h.get("x-api-key"))
                link = h.get(PARENT_REQUEST_HEADER)
                if link is not None:  # one of those choices, if the link verifies; else ignored
                    key = self.key
                    self.parent_request_id = parent_link.verify(
                        config.attempt_grant_key, link, key.workspace.id, key.id
                    )
            if self.trace is not None:
                self.trace.authenticated(self.key.workspace.id)
            if headers.end_of_stream:
                raise GatewayError(400, "invalid_json", "The request body is empty.")
            if endpoint.request_body is RequestBody.STREAMED:
                # Answered once the form's model has passed (ext_proc/upload_intake.py).
                services = self._services
                self.upload = UploadIntake(
                    h.get("content-type", ""),
                    services.upload_lookahead,
                    services.max_upload_bytes,
                    h.get("content-length"),
                )
        except GatewayError as err:
            return self._refused_now(err)
        # Envoy's trace decision rides in the id (ext_proc/request_id.py): ours keeps it.
        self.request_id = new_request_id(trace_reason(self.request_id))
        self._move(RECEIVED)
        if self.upload is not None:
            return None
        return msg.request_headers(
            set_headers=((REQUEST_ID_HEADER, self.request_id),), remove=header_policy.CONTROL
        )

    def _headers_only(
        self, endpoint: Endpoint, method: str, h: dict[str, str], config: GatewayConfig
    ) -> ep.ProcessingResponse | Awaitable[ep.ProcessingResponse]:
        """An endpoint answered from the headers alone (``RequestBody.HEADERS_ONLY``): the caller
        authenticated, then what the endpoint says (``Endpoint.on_headers``). Not metered: no key
        on the exchange, so no usage record (the files service records its own)."""
        key = authenticate(h.get("authorization"), h.get("x-api-key"), config)
        target = h.get(":path", "/")
        request = HeadersRequest(method, target, self.path, key, config, self.request_id, self._services)
        reply = endpoint.on_headers(request)
        if isinstance(reply, Answer | ep.ProcessingResponse):
            return self._headers_reply(reply)
        return self._headers_reply_later(reply)

    async def _headers_reply_later(self, pending: Awaitable[HeadersReply]) -> ep.ProcessingResponse:
        try:
            reply = await pending
        except GatewayError as err:
            if self.state in FINAL:  # the client left while the endpoint's I/O ran
                return self._error_reply(err)
            return self._refused_now(err)
        return self._headers_reply(reply)

    def _headers_reply(self, reply: HeadersReply) -> ep.ProcessingResponse:
        if isinstance(reply, Answer):
            self.status = reply.status
        if self.state not in FINAL:
            self._exit_now(FINISHED)
        if isinstance(reply, Answer):
            return self._answer(reply.status, reply.body)
        return reply

    async def on_request_body(self, body: Body) -> msg.Reply | list[ep.ProcessingResponse]:
        """The answer to the body; for an upload's chunk, the answers now owed (none while its
        model has not passed, the headers' and every held chunk's once it has)."""
        if self.upload is not None:
            return await self._upload_chunk(self.upload, body)
        if self.state is not RECEIVED:
            raise IllegalMove(self.state, ADMITTED)
        try:
            if self.recover_only:
                return await self._recover_line(body.body)
            # The body's bytes go to the phase's own frame, and this one drops the message: the
            # protobuf (or the buffer a large body is a view of) goes as soon as they are parsed.
            admitted = self._admit_and_route(body.body)
            del body
            return await admitted
        except GatewayError as err:
            return await self._refused(err)

    async def _recover_line(self, raw: bytes | memoryview) -> ep.ProcessingResponse:
        """What became of a batch line whose worker died holding it (``BATCH_RECOVER_HEADER``,
        sent by the batch's finalizer): its stored answer, replayed at no charge, or 409 while it
        is still running; never served now (a cancelled or expired batch starts no line).

        A line no answer was ever kept for is 404 ``batch_line_not_sent``, and that 404 is kept
        under the line's idempotency key in its place: a worker that was only slow (its lease
        ran out) and sends the line after the probe is answered the same 404, never served and
        charged behind a batch that has already counted its lines. Not admitted against the
        limits: nothing is served, and a probe the lane refused would leave the line unknown."""
        assert self.key is not None
        workspace = self.key.workspace
        self._move(ADMITTED)
        replay = await self._claim_idempotency_key(workspace.id, self._fingerprint(raw))
        if replay is not None:
            return replay
        err = GatewayError(404, BATCH_LINE_NOT_SENT, "This batch line was never served.")
        self.status, self.error_code = err.status, err.code
        body = self._error_body(err)
        self.transcript = [body]
        await self._settle(FAILED, keep=True, headers=[("content-type", "application/json")])
        return self._answer(err.status, body)

    async def _claim_idempotency_key(
        self, workspace_id: str, fingerprint: bytes
    ) -> ep.ProcessingResponse | None:
        """Claims the request's idempotency key (``self.claim``) and returns None; or, when the key
        already has an answer, that answer replayed. A key in use or reused raises (idempotency.py)."""
        scope = self._idempotency_scope()
        outcome = await self._services.idempotency.begin(
            workspace_id, self.idempotency_key, fingerprint, scope
        )
        if not isinstance(outcome, Proceed):
            return self._replay(outcome.stored)
        self.claim = Claim(workspace_id, self.idempotency_key, outcome.token, scope)
        return None

    def _fingerprint(self, raw: bytes | memoryview) -> bytes:
        """What an idempotency key is bound to: the path and the body as sent (hashed in two
        parts: the body is not copied behind its prefix)."""
        digest = hashlib.sha256(b"POST " + self.path.encode() + b"\n")
        digest.update(raw)
        return digest.digest()

    async def _admit_and_route(self, raw: bytes | memoryview) -> msg.Reply:
        assert self.key is not None and self.endpoint is not None
        config = self._require_config()
        body, model = self._read_request(raw, config)
        # What is needed of the client's bytes once parsed; then they go, before the body sent
        # upstream is made (a prompt of megabytes is not held three times over).
        size = len(raw)
        fingerprint = self._fingerprint(raw) if self.idempotency_key else b""
        del raw
        choices = self._emulated_choices(body, model, config)
        if choices:  # this request is choice 0; the others are asked for once it is routed
            body = self.request_body = extra_choices.one_choice(body)
        if self.endpoint.conversations and body.get("previous_response_id") is not None:
            await self._continue(body, size)  # before admission: the tokens reserved count the history

        # Admitted first: a replay counts against the limits too (cheap, not free: it settles
        # at 0 tokens and 0 credits), and nothing is fetched for a request over its limits.
        workspace = self.key.workspace
        batch = self.batch_line is not None
        tpm = workspace.batch_lane().tpm if batch else workspace.tpm
        estimate = self.endpoint.reservation(body) if tpm else 0  # only a token limit needs it
        limiter = self._services.limiter
        # A batch's line is admitted against the batch lane: live requests' buckets are not its.
        self.admission = await (
            limiter.admit(workspace, estimate, batch=True) if batch else limiter.admit(workspace, estimate)
        )
        self._move(ADMITTED)

        if self.idempotency_key:
            replay = await self._claim_idempotency_key(workspace.id, fingerprint)
            if replay is not None:
                return replay
            self.transcript = []

        if model.provider.wire_format in self.endpoint.local_for:
            return await self._local_answer(body, model)
        slug = self.model_requested
        # Stored files the request names (file_id) go inline, for whichever provider serves it:
        # into a copy, which goes upstream (the request itself stays as the client sent it).
        refs = self.endpoint.file_refs(body)
        if refs:
            who = Identity(self.request_id, workspace.id, self.key.member_id, self.key.id)
            body = await file_refs.resolve(
                body, refs, self.endpoint, self._services.files, config.files_identity_key, who
            )
        route = config.routes.get(slug)
        if route is not None and route.cluster and self.endpoint.fallback:
            # A fallback chain: Envoy walks it, the upstream filter translates each attempt.
            changed = refs or self.conversation is not None or bool(choices)  # files, history, n
            response = self._to_chain(config, route, orjson.dumps(body) if changed else None)
        else:
            upstream_body, set_headers, remove = await upstream_request(
                model, self.endpoint, body, self.client_headers, self._services.media
            )
            # The body's length varies; the target's path, host, key and cluster do not: one preset.
            varying = set_headers[:1]
            fixed = msg.fixed_preset((*set_headers[1:], (ROUTE_HEADER, model.provider.cluster)))
            if self.trace is not None:  # the provider's parent: this attempt's span
                varying.append(self._attempt_traceparent(self.trace, model))
            # The model's timeouts (and its chain's retries) for Envoy's router.
            router = route.direct if route is not None else b""
            # A large body is written after the reply's other fields, not copied into it.
            response = msg.request_body(upstream_body, varying, remove, preset_headers=fixed + router)
        if choices:
            self._ask_extra_choices(body, choices)
        self._move(ROUTED)
        return response

    def _emulated_choices(self, body: dict[str, Any], model: Model, config: GatewayConfig) -> int:
        """n, when the gateway must ask for the choices itself (ext_proc/extra_choices.py), else 0."""
        n = body.get("n")
        if n is None or n == 1 or self.endpoint is not chat_completions.ENDPOINT:
            return 0  # the usual request: one dict lookup
        route = config.routes.get(model.slug)
        targets = route.fallbacks if route is not None and route.cluster else ()
        formats = [model.provider.wire_format]
        formats += [m.provider.wire_format for slug in targets if (m := config.models.get(slug)) is not None]
        n = extra_choices.emulated(body, formats)
        if n and self.batch_line is not None:
            # A batch line's credential is good for that one line (batch_gate.py): there is no
            # key to ask the other choices with, and a second use would be a replay.
            raise GatewayError(
                400,
                "unsupported_parameter",
                "n > 1 is not supported in a batch by this model's provider.",
                "n",
            )
        if n and self._services.listener is None:
            raise GatewayError(
                400,
                "unsupported_parameter",
                "n > 1 is not supported by this model's provider (INFERY_LISTENER_URL is not set).",
                "n",
            )
        return n

    def _ask_extra_choices(self, body: dict[str, Any], n: int) -> None:
        """Choices 1..n-1: asked of the gateway's own listener, now, with the client's key, each
        carrying the signed link to this request that its usage record names."""
        listener = self._services.listener
        assert listener is not None and self.model is not None and self.key is not None
        parent = parent_link.Parent(self.request_id, self.key.workspace.id, self.key.id)
        expires = int(self.started + listener.timeout_s) + 60  # the calls are made now, at once
        link = parent_link.sign(self._require_config().attempt_grant_key, parent, expires)
        self.extra = ExtraCalls(listener, self.credential, body, n, link)

    async def _local_answer(self, body: dict[str, Any], model: Model) -> ep.ProcessingResponse:
        """The gateway's own answer, for a provider without such an API that the endpoint stands in
        for (count_tokens' estimate): no upstream call, nothing charged, a usage record."""
        assert self.endpoint is not None
        answer = self.endpoint.local_answer(body)
        self.status = 200
        headers = [
            ("content-type", "application/json"),
            (MODEL_USED_HEADER, model.slug),
            (CREDITS_USED_HEADER, format_credits(self.credits)),
            *(self.admission.headers if self.admission else ()),
        ]
        if self.transcript is not None:
            self.transcript.append(answer)
        await self._settle(FINISHED, keep=True, headers=headers)
        return self._answer(200, answer, headers)

    def _to_chain(self, config: GatewayConfig, route: Route, body: bytes | None = None) -> msg.Reply:
        """The request, untouched (or ``body``: with its stored files inline, or the kept conversation
        it continues), to the chain's cluster
        (or the variant this workspace may use); each attempt translates what it gets."""
        assert self.key is not None and self.endpoint is not None
        self.chain = route
        self.chain_targets, cluster = route.allowed_chain(self.key.workspace)
        set_headers = [(ROUTE_HEADER, cluster)]
        # What each attempt needs, where no provider sees it (ext_proc/attempt.py).
        metadata: msg.Metadata = (ATTEMPT_METADATA, self._attempt_metadata(config, route))
        if body is not None:
            set_headers.append(("content-length", str(len(body))))
        # Envoy's chain route, with this cluster's retries and the chain's timeouts.
        return msg.request_body(
            body, set_headers, (), metadata=metadata, preset_headers=route.router[cluster]
        )

    def _read_request(self, raw: bytes | memoryview, config: GatewayConfig) -> tuple[dict[str, Any], Model]:
        """The request body for this endpoint, parsed and checked, and the model it asks for.

        What differs by endpoint (its API's parameter refusals, whether it streams) is the
        endpoint's (ext_proc/endpoints/).
        """
        assert self.key is not None and self.endpoint is not None
        body = _parse_body(raw)
        model = self._requested_model(body, config)
        return body, model

    def _requested_model(self, body: dict[str, Any], config: GatewayConfig) -> Model:
        """The model a request names, checked: it exists, the workspace may use it, and the
        request passes its endpoint's own checks (the API's refusals, whether it streams)."""
        assert self.key is not None and self.endpoint is not None
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
        return model

    # -- uploads (RequestBody.STREAMED: ext_proc/upload_intake.py) -------------

    async def _upload_chunk(
        self, upload: UploadIntake, body: Body
    ) -> ep.ProcessingResponse | list[ep.ProcessingResponse]:
        state = self.state
        if state is RECEIVED:  # the model has not passed yet
            try:
                if not upload.feed(body):
                    return []
                return await self._route_upload(upload)
            except GatewayError as err:
                return await self._refused(err)
        if state is UPLOADING:
            try:
                answer = upload.next(body)
                if body.end_of_stream:  # every field known: those after the model are checked too
                    assert self.endpoint is not None
                    self.endpoint.check(upload.stream.fields)
                    self.stream, self.include_usage = self.endpoint.streaming(upload.stream.fields)
                    self._move(ROUTED)
                return answer
            except GatewayError as err:
                return await self._refused(err)
        if state in FINAL and not upload.routed:
            return []  # refused: Envoy sends nothing more after an immediate response
        if state is RESPONDING or state is FAILING or state in FINAL:
            # The answer began before the upload ended (the provider's, or Envoy's own): the
            # rest goes nowhere.
            return msg.request_chunk(b"")
        raise IllegalMove(state, UPLOADING)  # ROUTED: the upload has ended, no chunk follows

    async def _route_upload(self, upload: UploadIntake) -> list[ep.ProcessingResponse]:
        """Admit and route an upload whose model has passed: the deferred answer to its headers,
        then the answers of the chunks held (ext_proc/upload_intake.py)."""
        assert self.key is not None and self.endpoint is not None
        config = self._require_config()
        fields = upload.stream.fields
        model = self._requested_model(fields, config)
        workspace = self.key.workspace
        estimate = self.endpoint.reservation(fields) if workspace.tpm else 0
        self.admission = await self._services.limiter.admit(workspace, estimate)
        self._move(ADMITTED)
        # Not idempotent: an upload's fingerprint is its whole body, known only once it has gone
        # upstream; an Idempotency-Key on an upload is ignored (README, "Audio").
        identity = [(REQUEST_ID_HEADER, self.request_id)]
        route = config.routes.get(model.slug)
        chained = route is not None and bool(route.cluster)
        if chained and upload.length is None:
            # A chain's retries need the upload's size up front (below); without Content-Length it
            # goes to the chain's first target alone, with no fallback (README, "Audio").
            chained, route = False, None
        if route is not None and chained:
            # Envoy's router keeps a chain's request for its retries, within its buffer. An upload
            # that would outgrow it is refused before anything goes upstream: Envoy 1.40 was
            # measured to crash when a streamed upload to a chain was cut past that buffer.
            limit = self._services.max_buffered_bytes
            if upload.length is not None and upload.length >= limit:
                raise GatewayError(
                    413,
                    "request_too_large",
                    f"An upload to a model with fallbacks may be at most {limit - 1} bytes.",
                )
            self.chain = route
            self.chain_targets, cluster = route.allowed_chain(workspace)
            set_headers = [*identity, (ROUTE_HEADER, cluster)]
            metadata: msg.Metadata = (ATTEMPT_METADATA, self._attempt_metadata(config, route))
            headers = msg.request_headers(
                set_headers,
                header_policy.CONTROL,
                clear_route_cache=True,
                metadata=metadata,
                preset_headers=route.router[cluster],  # the chain route, its retries and timeouts
            )
            self._move(ROUTED if upload.ended else UPLOADING)
            return upload.route(headers, None)
        form = form_upstream(model, self.endpoint, upload.boundary)
        provider = model.provider
        set_headers = [
            *identity,
            (":path", form.path),
            (":authority", provider.host),
            *form.headers.items(),
            (ROUTE_HEADER, provider.cluster),
        ]
        if self.trace is not None:
            set_headers.append(self._attempt_traceparent(self.trace, model))
        names = {name for name, _ in set_headers}
        remove = [
            *header_policy.CONTROL,
            "content-length",
            *header_policy.request_removals(provider.kind, self.client_headers, names),
        ]
        # The model's timeouts for Envoy's router (not a chain: see above).
        router = route.direct if route is not None else b""
        headers = msg.request_headers(set_headers, remove, clear_route_cache=True, preset_headers=router)
        self._move(ROUTED if upload.ended else UPLOADING)
        return upload.route(headers, form.writer)

    def _idempotency_scope(self) -> str:
        """Whose replays these are: the member's, unless the workspace shares them; a batch line's
        are the batch lines' own. A line's key is derived from its batch id and custom_id, which a
        client knows: in the client's scope, a client could claim it first and turn the line into
        a 422 or a replay of its own request. No client key reaches this scope (``key_hash``: a
        client's scope is empty or a member id, and its key, a header, holds no newline)."""
        assert self.key is not None
        if self.batch_line is not None:
            return BATCH_LINE_SCOPE
        return "" if self.key.workspace.share_idempotent_replays else self.key.member_id

    def _attempt_metadata(self, config: GatewayConfig, route: Route) -> dict[str, str]:
        """What a chain's attempts learn from the listener (ext_proc/attempt.py), in Envoy's metadata."""
        fields = {GRANT_FIELD: self._attempt_grant(config, route), ENDPOINT_FIELD: self.path}
        if self.trace is not None:  # their spans' parent
            fields[TRACEPARENT_FIELD] = self.trace.traceparent
        return fields

    def _attempt_traceparent(self, trace: RequestTrace, model: Model) -> tuple[str, str]:
        """The single attempt's span begins; the header that names it to the provider."""
        assert self.endpoint is not None
        return (tracing.TRACEPARENT, trace.routed(self.endpoint.operation, model, self.request_id))

    def _start_trace(self, tracer: Tracer, method: str, h: dict[str, str]) -> None:
        """The request span: a child of Envoy's span for this stream when Envoy traces, else of
        the client's ``traceparent``, sampled at the operator's share, not on the client's flag
        (else a new trace)."""
        parent = tracing.parent_context(tracing.grpc_carrier(self._trace_carrier))
        if parent is None:
            parent = tracer.client_parent({k: h[k] for k in header_policy.TRACE_CONTEXT if k in h})
        self.trace = tracer.request(method, self.path, endpoints.by_path(self.path) is not None, parent)

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
        self._exit_now(FINISHED)
        return self._answer(stored.status, stored.body, stored.headers)

    # -- response ------------------------------------------------------------

    async def on_response_headers(self, headers: ep.HttpHeaders) -> ep.ProcessingResponse:
        state = self.state
        if state is not ROUTED and state is not UPLOADING and state is not RECEIVED:
            raise IllegalMove(state, RESPONDING)
        h = msg.header_map(headers, header_policy.READ_FROM_UPSTREAM)
        self.status = int(h.get(":status", "0") or 0)
        rate_headers = self.admission.headers if self.admission else []
        local_reply = h.get(LOCAL_REPLY_HEADER)
        if self.trace is not None:
            self.trace.answered(self.status, local_reply or "")
        if local_reply is not None or state is RECEIVED:
            # The gateway's own failure (timeout, reset, every target down; a body too large
            # while it was buffered): already in the envelope, settled with its body.
            self.status = self.status or 502
            self.error_code = local_reply or "upstream_error"
            reply = msg.response_headers(
                set_headers=rate_headers, remove=header_policy.response_removals(headers, rate_headers)
            )
            if headers.end_of_stream:
                if self.extra is not None:
                    code = self.error_code
                    error = envelope(self.status, code, "The gateway could not serve this choice.")
                    instead = await self._others_instead(error, FAILED)
                    if instead is not None:  # no body follows: answered whole
                        return self._answer(200, instead.body, instead.headers)
                await self._settle(FAILED, keep=True)
            else:
                self._move(FAILING)
            return reply
        assert self.model is not None
        if self.chain is not None:
            self._note_served(h.get(SERVED_HEADER, ""))
        served = [(MODEL_USED_HEADER, self.model.slug), *rate_headers]
        if self.fallback_from:
            served.append((FALLBACK_FROM_HEADER, self.fallback_from))
        remove = header_policy.response_removals(headers, served)
        assert self.endpoint is not None
        if self.endpoint.passes_answer and self.status < 400 and not headers.end_of_stream:
            # Speech: the audio goes to the client as the provider streams it, never through
            # here; its charge is known from the request (its characters).
            settlement.charge(self, self.endpoint.request_usage(self.request_body) or Usage())
            served.append((CREDITS_USED_HEADER, format_credits(self.credits)))
            await self._settle(FINISHED)
            return msg.response_headers(set_headers=served, remove=remove, skip_body=True)
        if (
            self.stream
            and self.upload is None  # an upload's answer is read whole (transcriptions_openai.py)
            and self.status == 200
            and h.get("content-type", "").startswith("text/event-stream")
            and not headers.end_of_stream
        ):
            self._move(STREAMING)
            if self.transcript is None:
                self.transcript = []
            assert self.endpoint is not None  # set with self.stream, by the endpoint
            translator = translator_for(self.endpoint, self.model.provider.kind)
            stream = translator.stream(self._response_context())
            # An emulated n: the transcript has every choice, the answer choice 0's only (what it
            # is charged for when the client leaves: the others are charged by their own requests).
            own = self.transcript if self.extra is None else []
            self.answer = StreamAnswer(self.endpoint, stream, own, self._services.max_sse_event_bytes)
            return msg.response_headers(
                set_headers=served, remove=("content-length", *remove), stream_body=True
            )
        if headers.end_of_stream:
            return await self._buffered_reply(b"", served, as_headers=True)
        self._move(RESPONDING)
        return msg.response_headers(set_headers=served, remove=remove)

    def _note_served(self, slug: str) -> None:
        """A chain's answer: which target gave it decides how it is read and charged."""
        model = self._config.models.get(slug) if (self._config and slug) else None
        if model is not None and model is not self.model:
            self.fallback_from = self.model_requested
            self.model = model
            if self.trace is not None:
                self.trace.fell_back(self.fallback_from, model.slug)

    async def on_response_body(self, body: ep.HttpBody) -> ep.ProcessingResponse:
        state = self.state
        if state is STREAMING:  # per chunk: one call into the stream, no await until its end
            answer = self.answer
            assert answer is not None
            chunk = body.body
            out = answer.feed(chunk, body.end_of_stream)
            if self.extra is not None:
                return await self._interleaved(answer, out)
            if answer.ended:
                out += await self._end_stream(answer)
            return msg.response_body(None if out is chunk else out)
        if state is RESPONDING:
            if not body.end_of_stream:  # only the first part of an answer over the buffer limit
                too_large = GatewayError(502, "upstream_error", _TOO_LARGE)
                if self.extra is not None:
                    self.status, self.error_code = too_large.status, too_large.code
                    instead = await self._others_instead(too_large.body(), FAILED)
                    if instead is not None:  # answered whole, as the refusal would be
                        return self._answer(200, instead.body, instead.headers)
                return await self._refused(too_large)
            return await self._buffered_reply(body.body, [], as_headers=False)
        if state is FAILING:
            return await self._local_reply(body.body)
        if state in FINAL:  # after the end: a stream's bytes after [DONE] go nowhere
            return msg.response_body(b"" if body.body and self.answer is not None else None)
        raise IllegalMove(state, RESPONDING)

    async def _buffered_reply(
        self, raw: bytes, headers: list[tuple[str, str]], *, as_headers: bool
    ) -> ep.ProcessingResponse:
        assert self.model is not None and self.endpoint is not None and self.key is not None
        translated = translator_for(self.endpoint, self.model.provider.kind).response(
            self.status, raw, self._response_context()
        )
        self.status = translated.status
        out = [*headers, ("content-length", str(len(translated.body)))]
        if translated.content_type is not None:
            out.append(("content-type", translated.content_type))
        if translated.status < 400:
            upload = self.upload
            if upload is not None:  # priced by what was heard (endpoints/audio_transcriptions.py)
                usage = self.endpoint.upload_usage(translated.usage, upload.measured_ms, upload.file_bytes)
            else:
                usage = settlement.answer_usage(
                    self.endpoint, translated.usage, translated.body, self.request_body
                )
            settlement.charge(self, usage)
            charged = self.credits
            if self.extra is not None:  # an emulated n: every choice, each charged by its own request
                translated, charged = await self._with_extra_choices(translated, out)
            out.append((CREDITS_USED_HEADER, format_credits(charged)))
            if self._keeps():
                await self._keep(translated.body)
        else:
            self.error_code = translated.error_code or "upstream_error"
            if self.chain is not None:
                translated.body = self._with_attempts(translated.body)
                out[-1] = ("content-length", str(len(translated.body)))
            if self.extra is not None:
                instead = await self._others_instead(translated.body, FINISHED)
                if instead is not None:
                    if as_headers:  # no body follows: answered whole
                        return self._answer(200, instead.body, instead.headers)
                    return instead.in_body()
            out += [("content-type", "application/json"), (":status", str(translated.status))]
        if self.transcript is not None:
            self.transcript.append(translated.body)
        await self._settle(FINISHED, keep=True, headers=out)
        if as_headers:
            # The provider sent no body, so no body message will follow: answer in full now.
            kept = [(k, v) for k, v in out if k not in (":status", "content-length")]
            return msg.immediate(translated.status, translated.body, kept)
        body = None if translated.body is raw else translated.body
        return msg.response_body(body, set_headers=out)

    async def _with_extra_choices(
        self, translated: Translated, out: list[tuple[str, str]]
    ) -> tuple[Translated, Decimal]:
        """Choice 0's answer with the other choices served in it, each with its index, and what
        they were all charged (``out``'s length updated, the choices not served named in it)."""
        extra = self.extra
        assert extra is not None
        await extra.finish()
        charged = self.credits + extra.credits
        translated.body = extra_choices.merged_answer(translated.body, extra.answers())
        out[:] = [(k, v) for k, v in out if k != "content-length"]
        out.append(("content-length", str(len(translated.body))))
        failures = extra.failures
        if failures:
            assert failures[0].error is not None
            out.append((CHOICES_FAILED_HEADER, str(len(failures))))
            out.append((CHOICES_ERROR_HEADER, _error_code(failures[0].error)))
        return translated, charged

    async def _others_instead(self, error: bytes, final: State) -> _Instead | None:
        """Choice 0 failed (``error``: the envelope the client would get) and an emulated n's
        other choices are under way. Each of them is charged by its own request, so they are
        waited for, and when any was served the client gets them instead of the failure
        (ext_proc/extra_choices.py): an answer of the choices served, or a stream of their chunks
        ending with choice 0's error event. The request's own record says 200 and choice 0's
        error code; it exits ``final`` (a gateway error's FAILING ends FAILED either way). None:
        nothing was served, the failure stands and the exit stops what still runs."""
        extra = self.extra
        assert extra is not None and self.endpoint is not None
        await extra.finish()
        served = extra.served
        if not served or self.state in FINAL:  # (the client left meanwhile: settled already)
            return None
        self.status = 200
        self.error_code = code = _error_code(error)
        charged = self.credits + extra.credits
        model = served[0].model or self.model_requested
        headers = [(MODEL_USED_HEADER, model), *(self.admission.headers if self.admission else ())]
        remove: list[str] = []
        if model != self.model_requested:
            headers.append((FALLBACK_FROM_HEADER, self.model_requested))
        else:
            remove.append(FALLBACK_FROM_HEADER)
        if extra.stream:
            # No id of choice 0's stream exists: one of this request's (what a chunk-less stream gets).
            events = extra.drain("chatcmpl-" + self.request_id, model)
            body = events + self.endpoint.stream_tail(error, format_credits(charged))
            headers.append(("content-type", "text/event-stream"))
            keep = False  # a stream ended by an error event is not replayed (ext_proc/idempotency.py)
        else:
            body = extra_choices.merged_answer(None, extra.answers())
            headers += [
                ("content-type", "application/json"),
                (CREDITS_USED_HEADER, format_credits(charged)),
                (CHOICES_FAILED_HEADER, str(1 + len(extra.failures))),
                (CHOICES_ERROR_HEADER, code),  # choice 0's: the first choice that failed
            ]
            keep = True  # a retry must not charge the choices served twice
        if self.transcript is not None:
            self.transcript.append(body)
        await self._settle(final, keep=keep, headers=headers)
        return _Instead(body, headers, remove)

    async def _interleaved(self, answer: StreamAnswer, out: bytes) -> ep.ProcessingResponse:
        """An emulated n's stream: choice 0's chunk, then the other choices' chunks that arrived
        meanwhile; at the end, the rest of theirs once they have all ended, then the tail."""
        extra = self.extra
        assert extra is not None and self.model is not None and self.transcript is not None
        stream_id = answer.translator.response_id or "chatcmpl-" + self.request_id
        out += extra.drain(stream_id, self.model.slug)
        if answer.ended:
            await extra.finish()
            out += extra.drain(stream_id, self.model.slug)
            failed = extra.failures[0].error if extra.failures else None
            if failed is not None and answer.last is not None and not answer.error_code:
                # choice 0 ended well, another did not: its last chunk goes out, then the failure
                out += answer.endpoint.stream_event(answer.last)
                answer.last = failed
                answer.error_code = _error_code(failed)
            elif answer.last is not None:
                answer.last = extra_choices.with_usage(answer.last, extra.usages)
            self.transcript.append(out)
            out += await self._end_stream(answer)  # which adds the tail to the transcript
        elif out:
            self.transcript.append(out)
        return msg.response_body(out)

    async def _end_stream(self, answer: StreamAnswer) -> bytes:
        """The stream's tail: the last chunk, carrying the charge, and ``[DONE]``; then the exit."""
        if answer.error_code:
            self.error_code = answer.error_code
        settlement.charge(self, settlement.stream_usage(answer, answer.last, self.request_body))
        last = answer.last
        if last is None:  # the endpoint writes it (chat: a final chunk, or the usage chunk asked for)
            assert self.model is not None
            usage = (self.usage or Usage()) if self.include_usage else None
            final = LastEvent(
                answer.translator.response_id, self.request_id, self.created, self.model.slug, usage
            )
            last = answer.endpoint.stream_last(final)
        elif not self.error_code and self._keeps():
            response = conversations.final_response(last)
            if response is not None:  # kept before the client hears the end
                await self._keep(response)
        charged = self.credits if self.extra is None else self.credits + self.extra.credits
        tail = answer.close(last, charged)
        if self.extra is not None and self.transcript is not None:
            self.transcript.append(tail)  # before the exit keeps it for replays
        await self._settle(FINISHED, keep=not self.error_code)
        return tail

    # -- the Responses API's kept responses (ext_proc/conversations.py) -------

    async def _continue(self, body: dict[str, Any], size: int) -> None:
        """Put the kept response ``previous_response_id`` names (its input, then its output) ahead
        of the request's input; 404 when the workspace has no such response, 413 when the request
        (``size`` bytes) and its history would be over the request limit: each turn fits, the
        conversation grows, and it is never built, sent nor kept again past what a client may send."""
        assert self.key is not None
        store = response_store.required(self._services.responses)
        response_id = body["previous_response_id"]
        kept = await store.find(self.key.workspace.id, str(response_id))
        if kept is None:
            raise GatewayError(
                404,
                "not_found",
                f"Previous response with id '{response_id}' not found.",
                "previous_response_id",
            )
        limit = self._services.max_buffered_bytes
        if size + len(kept.input_items) + len(kept.response) > limit:
            raise GatewayError(
                413,
                "request_too_large",
                f"The conversation previous_response_id continues, with this input, is over the gateway's"
                f" request limit ({limit} bytes); start a new one or send less.",
                "previous_response_id",
            )
        self.conversation = conversations.continued(
            body, conversations.history(kept.input_items, kept.response)
        )

    def _keeps(self) -> bool:
        """Whether this answer is kept: a Responses API request with ``store`` (default true)."""
        assert self.endpoint is not None
        return (
            self.endpoint.conversations
            and self._services.responses is not None
            and self.request_body.get("store") is not False
        )

    async def _keep(self, response: bytes) -> None:
        """Keep the answer before the client hears its end, so that the next turn finds it on
        any replica; an answer that cannot be kept is still given (the store logs it)."""
        assert self.key is not None and self.model is not None and self._services.responses is not None
        items = self.conversation
        if items is None:
            items = conversations.input_items(self.request_body)
        kept = conversations.kept_response(self.key.workspace.id, response, items)
        if kept is not None:
            workspace_id, response_id, created_at, doc, items_json = kept
            await self._services.responses.keep(
                workspace_id, response_id, self.model.slug, created_at, doc, items_json
            )

    async def _local_reply(self, raw: bytes) -> ep.ProcessingResponse:
        """The body of the gateway's own error reply (OpenAI's envelope, from Envoy or a chain's
        attempt), in its endpoint's shape; a chain's names the targets it tried."""
        out = self._with_attempts(raw) if self.chain is not None else raw
        if self.endpoint is not None:
            out = self.endpoint.restyle_error(self.status, out)
        if self.extra is not None:
            instead = await self._others_instead(out, FAILED)
            if instead is not None:
                return instead.in_body()
        if self.transcript is not None:
            self.transcript.append(out)
        await self._settle(FAILED, keep=True)
        if out is raw:
            return msg.response_body(None)
        return msg.response_body(out, set_headers=(("content-length", str(len(out))),))

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

    # -- the end of the ext_proc stream ---------------------------------------

    def abort(self) -> None:
        """The ext_proc stream ended (the end-of-stream hook; also after a final state).

        A request that has not reached a final state is settled now: ABANDONED, recorded as
        499 ``stream_interrupted`` (the client left, or Envoy reset the stream, also after the
        provider's first byte) and charged for what reached the client; a request whose
        gateway error was on its way is FAILED with that error.
        """
        state = self.state
        if state in FINAL:
            return
        if state is FAILING:
            self._exit_now(FAILED)
            return
        self.status = 499  # client closed request (nginx's code): no HTTP status reached the client
        self.error_code = "stream_interrupted"  # recorded only; no client gets it
        self._exit_now(ABANDONED)

    def internal_error(self) -> ep.ProcessingResponse:
        """A phase raised: settle as FAILED (500 ``internal_error``) unless already settled, and say so."""
        if self.state not in FINAL:
            self.status, self.error_code = 500, "internal_error"
            self._exit_now(FAILED)
        err = GatewayError(500, "internal_error", "The gateway failed to process the request.")
        return msg.immediate(500, self._error_body(err), ((REQUEST_ID_HEADER, self.request_id),))

    # -- states and the exit --------------------------------------------------

    def _move(self, new: State) -> None:
        """Moves to ``new``; a move the lifecycle does not allow is a bug (ext_proc/lifecycle.py)."""
        if new not in TRANSITIONS[self.state]:
            raise IllegalMove(self.state, new)
        self.state = new
        if self.trace is not None:
            self.trace.moved(new)

    def _exit(
        self, final: State, keep: bool = False, headers: list[tuple[str, str]] | None = None
    ) -> Coroutine[Any, Any, None] | None:
        """The one exit: move to ``final`` and settle (ext_proc/settlement.py). Returns the
        idempotency step, which the caller awaits (or runs in the background)."""
        if self.state in FINAL:  # never settled twice; reaching here is a bug
            log.error("request %s: already %s, not settled again as %s", self.request_id, self.state, final)
            return None
        self._move(final)
        if self.extra is not None:  # an emulated n's other choices end with it
            self.extra.cancel()
        return settlement.settle(self, keep=keep, headers=headers)

    async def _settle(
        self, final: State, *, keep: bool = False, headers: list[tuple[str, str]] | None = None
    ) -> None:
        """The exit, with the idempotency key kept (or let go) before the client hears the end."""
        pending = self._exit(final, keep, headers)
        if pending is not None:
            await pending

    def _exit_now(self, final: State) -> None:
        """The exit where nothing can wait: the idempotency key is released in the background."""
        pending = self._exit(final)
        if pending is not None:
            self._services.later(pending)

    def _refused_now(self, err: GatewayError) -> ep.ProcessingResponse:
        """Refused before anything was claimed (the headers phase)."""
        self.status, self.error_code = err.status, err.code
        self._exit_now(FAILED)
        return self._error_reply(err)

    async def _refused(self, err: GatewayError) -> ep.ProcessingResponse:
        """Refused after the headers phase (the request's body, or an answer past the buffer):
        limits settled, the idempotency key released, nothing charged."""
        self.status, self.error_code = err.status, err.code
        await self._settle(FAILED)
        return self._error_reply(err)

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
            (self.upload.measured_ms or 0) if self.upload is not None else 0,
        )

    def _require_config(self) -> GatewayConfig:
        if self._config is None:
            raise GatewayError(503, "upstream_unavailable", "The gateway has no configuration yet.")
        return self._config

    def _error_reply(self, err: GatewayError) -> ep.ProcessingResponse:
        headers: list[tuple[str, str]] = list(getattr(err, "headers", ()))
        if err.retry_after is not None:
            headers.append((RETRY_AFTER_HEADER, str(err.retry_after)))
        return self._answer(err.status, self._error_body(err), headers)

    def _error_body(self, err: GatewayError) -> bytes:
        """The error in its endpoint's shape (Anthropic's on its paths), OpenAI's before one is known."""
        if self.endpoint is None:
            return err.body()
        return self.endpoint.error_body(err.status, err.code, err.message, err.param)

    def _answer(
        self, status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()
    ) -> ep.ProcessingResponse:
        """Answer the client now, under this request's id; nothing goes upstream."""
        return msg.immediate(status, body, [*headers, (REQUEST_ID_HEADER, self.request_id)])


@dataclass(frozen=True, slots=True)
class _Instead:
    """The answer the client gets instead of choice 0's failure (:meth:`Exchange._others_instead`)."""

    body: bytes
    headers: list[tuple[str, str]]
    remove: list[str]  # what the response's headers phase set that no longer holds

    def in_body(self) -> ep.ProcessingResponse:
        """As the body phase's answer, replacing the (buffered) body and its headers."""
        length = ("content-length", str(len(self.body)))
        return msg.response_body(self.body, [*self.headers, (":status", "200"), length], self.remove)


def _parse_body(raw: bytes | memoryview) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, "invalid_json", f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "invalid_json", "The request body must be a JSON object.")
    return body


def _error_code(envelope: bytes) -> str:
    """``error.code`` of an OpenAI error envelope ("upstream_error" when it has none)."""
    try:
        error = orjson.loads(envelope).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return "upstream_error"
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and code else "upstream_error"
