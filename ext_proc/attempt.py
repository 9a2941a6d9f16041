"""One attempt of a fallback chain, in Envoy's upstream ext_proc filter.

Envoy walks a chain (retries and fallbacks) in its router; on each attempt its upstream
ext_proc filter opens a stream here with the client's original request and the chosen
target in the attribute ``xds.upstream_host_metadata``. The listener's exchange has
authenticated, admitted and routed the request already, and granted it the attempts
(ext_proc/attempt_grant.py); :class:`AttemptExchange` checks the grant and translates the
original body for the attempt's target (ext_proc/upstream_request.py).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from google.protobuf import text_format
from infery_proto.wire import (
    ATTEMPT_METADATA,
    ENDPOINT_FIELD,
    EXT_PROC_FILTER,
    GRANT_FIELD,
    HOST_METADATA_ATTRIBUTE,
    LOCAL_REPLY_HEADER,
    TARGET_METADATA,
    TARGET_MODEL_FIELD,
    TRACEPARENT_FIELD,
)

from ext_proc import endpoints, header_policy, tracing
from ext_proc import envoy_messages as msg
from ext_proc.attempt_grant import Grant, verify
from ext_proc.config import GatewayConfig
from ext_proc.endpoints.base import Endpoint, RequestBody
from ext_proc.errors import GatewayError
from ext_proc.form_stream import FormError, FormReader, FormWriter, boundary_of
from ext_proc.media_fetch import MediaPolicy
from ext_proc.received import Body
from ext_proc.upstream_request import form_upstream, upstream_request

if TYPE_CHECKING:
    from ext_proc.config import Model
    from ext_proc.tracing import AttemptTrace, Tracer

_CONTENT_TYPE = frozenset({"content-type"})

log = logging.getLogger("infery.ext_proc")

# What the listener's exchange tells a chain's attempts comes as Envoy dynamic metadata
# (wire.ATTEMPT_METADATA), not headers: the attempts share one header map with each other
# and with the provider, and each strips what its provider must not get.


def target_slug(attributes: Any) -> str:
    """The model a chain endpoint serves, from Envoy's ``xds.upstream_host_metadata`` attribute."""
    if EXT_PROC_FILTER not in attributes:
        return ""
    value = attributes[EXT_PROC_FILTER].fields.get(HOST_METADATA_ATTRIBUTE)
    if value is None or not value.string_value:
        return ""
    metadata = text_format.Parse(value.string_value, base_pb2.Metadata())
    target = metadata.filter_metadata.get(TARGET_METADATA)
    if target is None or TARGET_MODEL_FIELD not in target.fields:
        return ""
    return str(target.fields[TARGET_MODEL_FIELD].string_value)


def is_attempt(request: ep.ProcessingRequest) -> bool:
    """Whether a stream comes from the upstream filter (it asks for the host's metadata)."""
    attrs = request.attributes
    return EXT_PROC_FILTER in attrs and HOST_METADATA_ATTRIBUTE in attrs[EXT_PROC_FILTER].fields


class AttemptExchange:
    """The upstream filter's :class:`~ext_proc.processor.Processor` for one attempt.

    Made from the stream's first message, which carries the target (an attribute) and the
    listener's grant (dynamic metadata). Refused, it answers every later message with the
    refusal (Envoy sends none after an immediate response; a client that does gets the
    refusal, never a provider key).
    """

    __slots__ = (
        "_config",
        "_first",
        "_form",
        "_media",
        "_tracer",
        "endpoint",
        "grant",
        "present",
        "refusal",
        "slug",
        "trace",
    )

    def __init__(
        self,
        config: GatewayConfig | None,
        media: MediaPolicy,
        first: ep.ProcessingRequest,
        tracer: Tracer | None = None,
    ) -> None:
        self._config = config
        self._media = media
        self._first = first
        self._tracer = tracer  # None: tracing off
        self.trace: AttemptTrace | None = None  # this attempt's span, when traced
        self.slug = ""
        self.endpoint: Endpoint | None = None
        self.present: tuple[str, ...] = ()
        self.grant: Grant | None = None
        # Why the headers were refused; the body (should Envoy still send it) gets the same.
        self.refusal: ep.ProcessingResponse | None = _not_granted()
        # An upload's form, read and written for this target as it passes.
        self._form: tuple[FormReader, FormWriter] | None = None

    @property
    def request_id(self) -> str:
        return self.grant.request_id if self.grant is not None else ""

    def on_request_headers(self, headers: ep.HttpHeaders) -> ep.ProcessingResponse:
        self.refusal = self._check(headers)
        endpoint = self.endpoint
        if self.refusal is None and self._tracer is not None:
            self._start_trace(self._tracer)
        if self.refusal is None and endpoint is not None and endpoint.request_body is RequestBody.STREAMED:
            return self._upload_headers(headers)
        # Traced, the provider's answer headers come here too: the attempt's status.
        return self.refusal or msg.request_headers(see_response_headers=self.trace is not None)

    def _start_trace(self, tracer: Tracer) -> None:
        """This attempt's span, a child of the request span the listener named in the metadata."""
        model = self._target()
        if model is None or self.endpoint is None or self.grant is None:
            return
        meta = self._first.metadata_context.filter_metadata.get(ATTEMPT_METADATA)
        parent = meta.fields.get(TRACEPARENT_FIELD) if meta is not None else None
        context = tracing.parent_context({tracing.TRACEPARENT: parent.string_value}) if parent else None
        self.trace = tracer.attempt(self.endpoint.operation, model, self.grant.request_id, context)

    def _target(self) -> Model | None:
        return self._config.models.get(self.slug) if self._config else None

    def _traceparent(self) -> list[tuple[str, str]]:
        """The header naming this attempt's span to its provider (none when not traced)."""
        return [(tracing.TRACEPARENT, self.trace.traceparent)] if self.trace is not None else []

    def _upload_headers(self, headers: ep.HttpHeaders) -> ep.ProcessingResponse:
        """An upload's attempt: its route and credentials now, and its body chunk by chunk,
        written for this target as the client's form passes (the filter buffers bodies
        otherwise: the answer switches it to STREAMED for this attempt)."""
        assert self.endpoint is not None
        model = self._target()
        if model is None:
            self.refusal = _fail(
                GatewayError(503, "upstream_unavailable", f"Fallback target '{self.slug}' is not configured.")
            )
            return self.refusal
        content_type = msg.header_map(headers, _CONTENT_TYPE).get("content-type", "")
        try:
            boundary = boundary_of(content_type)
            form = form_upstream(model, self.endpoint, boundary)
        except FormError as err:
            self.refusal = _fail(GatewayError(400, "invalid_request", str(err)))
            return self.refusal
        except GatewayError as err:
            self.refusal = _fail(err)
            return self.refusal
        self._form = (FormReader(boundary, form.writer), form.writer)
        provider = model.provider
        set_headers = [
            (":path", form.path),
            (":authority", provider.host),
            *form.headers.items(),
            *self._traceparent(),
        ]
        names = {name for name, _ in set_headers}
        remove = ["content-length", *header_policy.request_removals(provider.kind, self.present, names)]
        return msg.request_headers(
            set_headers, remove, stream_body=True, see_response_headers=self.trace is not None
        )

    def _upload_chunk(self, body: Body) -> ep.ProcessingResponse:
        assert self._form is not None
        reader, writer = self._form
        try:
            reader.feed(bytes(body.body))  # a large chunk's view (ext_proc/received.py) copied
            if body.end_of_stream:
                reader.close()
        except FormError as err:
            return _fail(GatewayError(400, "invalid_request", str(err)))
        except GatewayError as err:
            return _fail(err)
        return msg.request_chunk(writer.take())

    def _check(self, headers: ep.HttpHeaders) -> ep.ProcessingResponse | None:
        """Nothing if the attempt may go ahead, else the reply that refuses it."""
        first = self._first
        self.slug = target_slug(first.attributes)
        self.present = header_policy.names(headers)
        meta = first.metadata_context.filter_metadata.get(ATTEMPT_METADATA)
        fields = meta.fields if meta is not None else {}
        key = self._config.attempt_grant_key if self._config else b""
        grant = fields.get(GRANT_FIELD)
        self.grant = verify(key, grant.string_value) if grant is not None else None
        if self.grant is None:
            # Not a stream Envoy's router opened for a request the listener admitted:
            # nothing of the provider's (its key above all) goes back.
            log.warning("refused an upstream attempt without a valid grant (target %r)", self.slug)
            return _not_granted()
        workspace = self._config.workspaces.get(self.grant.workspace_id) if self._config else None
        if workspace is None or not workspace.allows(self.slug):
            return _not_allowed(self.slug)
        endpoint = fields.get(ENDPOINT_FIELD)
        self.endpoint = endpoints.by_path(endpoint.string_value if endpoint is not None else "")
        if self.endpoint is None:
            return _fail(GatewayError(500, "internal_error", "Unknown endpoint for a fallback attempt."))
        return None

    async def on_request_body(self, body: Body) -> msg.Reply:
        if self.refusal is not None:
            return self.refusal
        if self._form is not None:
            return self._upload_chunk(body)
        assert self.endpoint is not None  # set with the grant's check
        model = self._target()
        if model is None:
            return _fail(
                GatewayError(503, "upstream_unavailable", f"Fallback target '{self.slug}' is not configured.")
            )
        doc = orjson.loads(body.body)
        del body  # a large body's message buffer (ext_proc/received.py) goes before it is translated
        try:
            upstream_body, set_headers, remove = await upstream_request(
                model, self.endpoint, doc, self.present, self._media
            )
        except GatewayError as err:
            return _fail(err)
        set_headers += self._traceparent()
        return msg.request_body(upstream_body, set_headers, remove, clear_route_cache=False)

    # The upstream filter asks for no response phase (control_plane/xds/envoy_config.py) unless
    # the attempt is traced (then the headers, for its status); anything else passes as it is.

    async def on_response_headers(self, headers: ep.HttpHeaders) -> ep.ProcessingResponse:
        trace = self.trace
        if trace is not None:
            h = msg.header_map(headers, header_policy.READ_FROM_UPSTREAM)
            trace.answered(int(h.get(":status", "0") or 0), h.get(LOCAL_REPLY_HEADER, ""))
        return msg.response_headers_unchanged()

    async def on_response_body(self, body: ep.HttpBody) -> ep.ProcessingResponse:
        return msg.response_body(None)

    def internal_error(self) -> ep.ProcessingResponse:
        """The gateway's own reply, so the listener passes it on (and a chain ends there)."""
        return _fail(GatewayError(500, "internal_error", "The gateway failed to prepare a fallback attempt."))

    def abort(self) -> None:
        """Nothing to settle (the listener's exchange charges and records the request) but the
        attempt's span, when traced: it ends with the attempt's stream."""
        trace, self.trace = self.trace, None
        if trace is not None:
            trace.end()


def _fail(err: GatewayError) -> ep.ProcessingResponse:
    # Marked as the gateway's own reply, so the listener passes the envelope through
    # instead of reading it as the provider's error.
    return msg.immediate(err.status, err.body(), ((LOCAL_REPLY_HEADER, err.code),))


def _not_granted() -> ep.ProcessingResponse:
    return _fail(GatewayError(403, "attempt_not_authorized", "This attempt was not granted by the gateway."))


def _not_allowed(slug: str) -> ep.ProcessingResponse:
    """A target the workspace may not use: never served.

    The listener sends such a workspace to a chain without it (control_plane/store/
    chain_variants.py); this holds while that variant is not yet published. Envoy's
    router does not retry an upstream filter's own reply (measured, 403 and 503
    alike), so this ends the request. A 403, not a 5xx: outlier detection must not
    eject a healthy target for everyone.
    """
    err = GatewayError(
        403, "model_not_allowed", f"This workspace may not use the fallback target '{slug}'.", param="model"
    )
    return _fail(err)
