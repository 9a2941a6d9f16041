"""One attempt at a provider: the request half of translation.

Shared by the listener's exchange (a model without fallbacks: one attempt,
prepared there) and by Envoy's upstream ext_proc filter (a fallback chain:
called once per attempt with the client's original body, so that each
target is translated for its own provider).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

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
)

from ext_proc import endpoints, header_policy
from ext_proc import envoy_messages as msg
from ext_proc.attempt_grant import Grant, verify
from ext_proc.config import GatewayConfig, Model
from ext_proc.endpoints.base import Endpoint
from ext_proc.errors import GatewayError
from ext_proc.media_fetch import MediaPolicy, fetch_media
from ext_proc.translators import translator_for
from ext_proc.translators.base import Target

log = logging.getLogger("infery.ext_proc")
# What the listener's exchange tells a chain's attempts comes as Envoy dynamic metadata
# (wire.ATTEMPT_METADATA), not headers: the attempts share one header map with each other
# and with the provider, and each strips what its provider must not get.


async def upstream_request(
    model: Model,
    endpoint: Endpoint,
    body: dict[str, Any],
    present: Collection[str],
    media: MediaPolicy,
) -> tuple[bytes, list[tuple[str, str]], list[str]]:
    """(body, headers to set, headers to remove) of the request to ``model``'s provider.

    ``present`` names the headers the request has now: whatever this provider's
    allow-list does not name is removed (the client's, and a previous attempt's:
    Envoy shares one header map between the attempts of a chain).
    ``media`` says which image/PDF URLs the gateway may fetch for the provider, and how many.
    """
    provider = model.provider
    translator = translator_for(endpoint, provider.wire_format)
    urls = translator.media_urls(body)
    fetched = (
        await fetch_media(urls, allowed_hosts=media.allowed_hosts, max_urls=media.max_urls) if urls else {}
    )
    upstream = translator.request(
        body, Target(provider.kind, provider.base_path, provider.api_key, model.upstream_model, fetched)
    )
    set_headers = [
        (":path", upstream.path),
        (":authority", provider.host),
        ("content-length", str(len(upstream.body))),
        *upstream.headers.items(),
    ]
    remove = header_policy.request_removals(provider.kind, present, {name for name, _ in set_headers})
    return upstream.body, set_headers, remove


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
    """One attempt of a fallback chain, in Envoy's upstream ext_proc filter.

    The listener's exchange has authenticated, admitted and routed the request
    already, and granted it the attempts (ext_proc/attempt_grant.py); this checks
    the grant and translates the original body for the attempt's target.
    """

    __slots__ = ("_config", "_media", "endpoint", "grant", "present", "refusal", "slug")

    def __init__(self, config: GatewayConfig | None, media: MediaPolicy) -> None:
        self._config = config
        self._media = media
        self.slug = ""
        self.endpoint: Endpoint | None = None
        self.present: tuple[str, ...] = ()
        self.grant: Grant | None = None
        # Why the headers were refused; the body (should Envoy still send it) gets the same.
        self.refusal: ep.ProcessingResponse | None = _not_granted()

    def on_request_headers(self, request: ep.ProcessingRequest) -> ep.ProcessingResponse:
        self.refusal = self._check(request)
        return self.refusal or msg.request_headers()

    def _check(self, request: ep.ProcessingRequest) -> ep.ProcessingResponse | None:
        """Nothing if the attempt may go ahead, else the reply that refuses it."""
        self.slug = target_slug(request.attributes)
        self.present = header_policy.names(request.request_headers)
        meta = request.metadata_context.filter_metadata.get(ATTEMPT_METADATA)
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

    async def on_request_body(self, body: ep.HttpBody) -> ep.ProcessingResponse:
        if self.refusal is not None:
            return self.refusal
        assert self.endpoint is not None  # set with the grant's check
        model = self._config.models.get(self.slug) if self._config else None
        if model is None:
            return _fail(
                GatewayError(503, "upstream_unavailable", f"Fallback target '{self.slug}' is not configured.")
            )
        try:
            upstream_body, set_headers, remove = await upstream_request(
                model, self.endpoint, orjson.loads(body.body), self.present, self._media
            )
        except GatewayError as err:
            return _fail(err)
        except Exception:
            log.exception("fallback attempt at %s failed", self.slug)
            return _fail(
                GatewayError(500, "internal_error", "The gateway failed to prepare a fallback attempt.")
            )
        return msg.request_body(upstream_body, set_headers, remove, clear_route_cache=False)


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
