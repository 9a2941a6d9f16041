"""The names and error codes both sides of the gateway's boundary use, written once.

ext_proc (the data plane's request processor), the control plane and the Envoy
configuration the control plane writes must agree on every header one of them sets
and another reads or strips, on the dynamic-metadata keys Envoy carries between
ext_proc's filters, and on what each error code means. ``ext_proc`` and
``control_plane`` never import each other; both import this package, so they
agree by construction (tests/test_wire.py pins it).

Internal headers (``x-infery-*``) pass between Envoy and ext_proc only: Envoy's routes
strip them before a provider and from a provider's response, and ext_proc's header
allow-list keeps them from the client.

Error types: the decision. ``error.type`` is what OpenAI's API itself sends for the
same situation (its live answers, as the OpenAI simulator in simulators/openai_api.py
reproduces them), because the gateway is a superset of that API and OpenAI's SDKs and
client code meet the gateway where they met OpenAI:

- ``invalid_request_error`` for every error the caller can fix or must know about,
  whatever the 4xx status: OpenAI sends it for a bad key (401 ``invalid_api_key``), an
  unknown model (404 ``model_not_found``), an unknown path (404), a refused model
  (403). The names Anthropic uses (``authentication_error``, ``permission_error``,
  ``not_found_error``, ``rate_limit_error``) are not OpenAI's; the control plane used
  them, Envoy's local replies and ext_proc did not, and now all three send OpenAI's.
- ``requests`` for ``rate_limit_exceeded`` (OpenAI's type for a per-minute limit) and
  ``insufficient_quota`` for ``insufficient_quota`` (OpenAI's type and code for a spent
  budget).
- ``server_error`` for every 5xx.

The admin API (the control plane) uses the same envelope and the same table (SPEC:
"errors use the same envelope as the data plane"). A code is answered with its
table status, with two exceptions the table's callers own: the admin API answers a
schema violation with 422 ``invalid_request`` (FastAPI's convention), and a provider's
unusual 4xx status (402, 409...) reaches the client as is with ``invalid_request``.
Either way the type is the code's.
"""

from __future__ import annotations

from typing import Any, NamedTuple

# -- internal headers (Envoy <-> ext_proc; never to a provider, never to a client) -------

ROUTE_HEADER = "x-infery-cluster"  # set by ext_proc: the Envoy cluster the route sends to
# Set by ext_proc to CHAIN_ROUTE for a chain's request: Envoy's chain route (its retry priority,
# back-off and served header), whose per-chain values ext_proc sets with Envoy's router headers.
MODEL_ROUTE_HEADER = "x-infery-route"
CHAIN_ROUTE = "chain"  # the one value of MODEL_ROUTE_HEADER, and the chain route's name
SERVED_HEADER = "x-infery-served"  # set by a chain's Envoy route: the model of the target that answered
# On a reply the gateway made itself (Envoy's local replies, a chain attempt's refusal):
# the envelope's code. The listener's ext_proc passes such a body through as it is.
LOCAL_REPLY_HEADER = "x-infery-local-reply"
# ext_proc's immediate responses name themselves in Envoy's RESPONSE_CODE_DETAILS (the access log's
# ``details``), so that Envoy's local-reply mappers, which rewrite Envoy's own 413 and 408, leave
# ext_proc's (already the envelope, with its ``param``) as they are.
EXT_PROC_REPLY_DETAILS = "infery_ext_proc_reply"
EXT_PROC_TOKEN_HEADER = "x-infery-ext-proc-token"  # Envoy -> ext_proc over TCP: the shared token
# Envoy -> the files service: the caller ext_proc authenticated, signed (identity_assertion.py).
IDENTITY_HEADER = "x-infery-identity"
# A batch worker -> the listener: one line of a batch, acting for the batch's key (batch_assertion.py).
BATCH_LINE_HEADER = "x-infery-batch-line"
# A batch finalizer -> the listener, beside a line's credential: only say what became of the line
# (its stored answer, replayed), never serve it (ext_proc/exchange.py ``_recover_line``).
BATCH_RECOVER_HEADER = "x-infery-batch-recover"
BATCH_LINE_NOT_SENT = "batch_line_not_sent"  # its answer when no answer to the line was ever kept
# ext_proc -> its own listener: an emulated n's extra choice names the client's request, signed
# (ext_proc/parent_link.py); its usage record's parent_request_id.
PARENT_REQUEST_HEADER = "x-infery-parent-request"
INTERNAL_HEADER_PREFIX = "x-infery-"
# Removed by Envoy's route from every request before a provider, and from every provider's response.
INTERNAL_REQUEST_HEADERS = (
    ROUTE_HEADER,
    MODEL_ROUTE_HEADER,
    IDENTITY_HEADER,
    BATCH_LINE_HEADER,
    BATCH_RECOVER_HEADER,
    PARENT_REQUEST_HEADER,
)
INTERNAL_RESPONSE_HEADERS = (LOCAL_REPLY_HEADER, SERVED_HEADER)

# -- public headers (the gateway's API to its clients) -------------------------------------

REQUEST_ID_HEADER = "x-request-id"  # the gateway's id of the request; keys its usage record
MODEL_USED_HEADER = "x-model-used"  # the slug that served
FALLBACK_FROM_HEADER = "x-fallback-from"  # the slug the client asked for, when a fallback served
CREDITS_USED_HEADER = "x-credits-used"  # the charge, exact decimal digits
IDEMPOTENCY_KEY_HEADER = "idempotency-key"
IDEMPOTENT_REPLAYED_HEADER = "idempotent-replayed"  # "true" on a replayed response
RETRY_AFTER_HEADER = "retry-after"  # whole seconds
RETRY_AFTER_MS_HEADER = "retry-after-ms"
# An emulated n > 1 answered without some of its choices (ext_proc/extra_choices.py): how many
# were not served, and the first one's error.code. Public, so not ``x-infery-*`` (internal).
CHOICES_FAILED_HEADER = "x-choices-failed"
CHOICES_ERROR_HEADER = "x-choices-error"


class RateLimitHeaders(NamedTuple):
    """OpenAI's ``x-ratelimit-*`` names for one window (requests or tokens per minute)."""

    limit: str
    remaining: str
    reset: str


RATE_LIMIT_HEADERS = {
    window: RateLimitHeaders(
        f"x-ratelimit-limit-{window}", f"x-ratelimit-remaining-{window}", f"x-ratelimit-reset-{window}"
    )
    for window in ("requests", "tokens")
}

# -- the files service (control_plane/files/) ------------------------------------------------

FILES_PATH_PREFIX = "/v1/files"  # the files API; Envoy's files route and ext_proc's gate match it
FILES_CLUSTER = "infery_files"  # the files service's Envoy cluster (static, in each replica's bootstrap)
# The Batch API, served by the same service and route (control_plane/batches/).
BATCHES_PATH_PREFIX = "/v1/batches"
# The paths Envoy's files route sends to the files service, ext_proc asserting the caller's identity.
FILES_SERVICE_PREFIXES = (FILES_PATH_PREFIX, BATCHES_PATH_PREFIX)

# -- Envoy dynamic metadata and attributes ---------------------------------------------------

# What the listener's ext_proc tells a chain's attempts (Envoy's upstream ext_proc filter), as
# dynamic metadata in this namespace: not headers, which the attempts share with the provider.
ATTEMPT_METADATA = "infery.attempt"
GRANT_FIELD = "grant"  # the attempt grant (ext_proc/attempt_grant.py)
ENDPOINT_FIELD = "endpoint"  # the path the client called (its endpoint: ext_proc/endpoints/)
# The request span's W3C traceparent, when tracing is on: each attempt's span is its child
# (ext_proc/tracing.py). Metadata, not a header: a provider must get the attempt's own.
TRACEPARENT_FIELD = "traceparent"
# Endpoint metadata of a chain cluster's hosts: which model each one serves.
TARGET_METADATA = "infery.target"
TARGET_MODEL_FIELD = "model"
EXT_PROC_FILTER = "envoy.filters.http.ext_proc"  # the filter's name; Envoy keys its attributes by it
HOST_METADATA_ATTRIBUTE = "xds.upstream_host_metadata"  # the attribute the attempt filter asks for

# -- paths -------------------------------------------------------------------------------

# The endpoints whose request bodies ext_proc reads as a stream, chunk by chunk, never whole
# (multipart audio uploads: ext_proc/endpoints/, ``RequestBody.STREAMED``). Envoy's route for
# these paths switches the listener's ext_proc to STREAMED request bodies from the first byte
# (control_plane/xds/envoy_config.py ``streamed_body_route``).
STREAMED_BODY_PATHS = ("/v1/audio/transcriptions", "/v1/audio/translations")

# -- errors ------------------------------------------------------------------------------

INVALID_REQUEST_ERROR = "invalid_request_error"
SERVER_ERROR = "server_error"


class ErrorKind(NamedTuple):
    """What an error code answers: its HTTP status and OpenAI's ``error.type``."""

    status: int
    type: str


def _invalid(status: int) -> ErrorKind:
    return ErrorKind(status, INVALID_REQUEST_ERROR)


def _server(status: int) -> ErrorKind:
    return ErrorKind(status, SERVER_ERROR)


# OpenAI's own codes for a request the caller can fix. The gateway's request checks raise
# some of them, and an OpenAI-format provider's 400 with one of them keeps it.
OPENAI_REQUEST_CODES = frozenset(
    {
        "invalid_value",
        "invalid_type",
        "missing_required_parameter",
        "unknown_parameter",
        "unsupported_parameter",
        "unsupported_value",
        "context_length_exceeded",
        "string_above_max_length",
        "string_below_min_length",
        "array_above_max_length",
        "array_below_min_length",
        "empty_array",
        "integer_above_max_value",
        "integer_below_min_value",
        "decimal_above_max_value",
        "decimal_below_min_value",
        "invalid_image_url",
        "invalid_image",
        "invalid_image_format",
        "image_parse_error",
        "invalid_prompt",
        "content_policy_violation",
        "content_filter",
    }
)

ERRORS: dict[str, ErrorKind] = {
    **{code: _invalid(400) for code in sorted(OPENAI_REQUEST_CODES)},
    "invalid_json": _invalid(400),  # the body is not JSON
    "invalid_request": _invalid(400),  # fails validation (``param`` names the field)
    "unsupported_endpoint": _invalid(400),  # the model's provider has no such API
    "too_many_media_urls": _invalid(400),  # more image/file URLs than the gateway fetches for one request
    "invalid_api_key": _invalid(401),  # missing, unknown or revoked inf_ key
    "invalid_admin_token": _invalid(401),  # the admin API's bearer token
    "invalid_identity": _invalid(401),  # the files service: no identity asserted by ext_proc
    "model_not_allowed": _invalid(403),  # the workspace may not use the model
    "attempt_not_authorized": _invalid(403),  # a chain attempt without a valid grant
    "not_found": _invalid(404),  # an unknown path, or an id unknown to the workspace
    "model_not_found": _invalid(404),
    BATCH_LINE_NOT_SENT: _invalid(404),  # a batch finalizer's probe: the line was never served
    "method_not_allowed": _invalid(405),
    "request_timeout": _invalid(408),  # the client did not send its request in time (Envoy)
    "idempotency_key_in_use": _invalid(409),
    "already_exists": _invalid(409),  # admin API
    "in_use": _invalid(409),  # admin API: deleting it would leave a reference dangling
    "conflict": _invalid(409),  # admin API: lost a race with a concurrent change
    "request_too_large": _invalid(413),
    "idempotency_key_reused": _invalid(422),
    "rate_limit_exceeded": ErrorKind(429, "requests"),
    "insufficient_quota": ErrorKind(429, "insufficient_quota"),
    "internal_error": _server(500),
    "upstream_error": _server(502),  # the provider failed and no fallback could serve
    "upstream_unavailable": _server(503),  # every target unreachable or overloaded
    "gateway_unavailable": _server(503),  # Envoy cannot reach ext_proc
    "idempotency_unavailable": _server(503),  # the idempotency store is down
    "responses_unavailable": _server(503),  # the stored responses (Responses API) are unreachable
    "upstream_timeout": _server(504),
}


def error_type(code: str, status: int) -> str:
    """OpenAI's ``error.type`` for ``code``; a code outside the table gets its status's."""
    kind = ERRORS.get(code)
    if kind is not None:
        return kind.type
    return SERVER_ERROR if status >= 500 else INVALID_REQUEST_ERROR


def error_object(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope, ``{"error": {type, code, message, param}}``, as a JSON-ready dict."""
    return {"error": {"type": error_type(code, status), "code": code, "message": message, "param": param}}


# -- Anthropic's error shape (the Messages API: /v1/messages) --------------------------------
#
# On Anthropic's own paths the gateway answers as Anthropic does, so that the Anthropic SDK
# and the tools built on it read the gateway's errors as their own:
# ``{"type": "error", "error": {"type": <Anthropic's type>, "code": <the gateway's code>,
# "message": ...}}``. The type is the one Anthropic's API sends for the status
# (https://docs.anthropic.com/en/api/errors) among those its SDK's ``ErrorObject`` union
# knows (the documented ``request_too_large`` of a 413 is not one: such a body would fail the
# SDK's types, so a 413 is ``invalid_request_error``); the code is the same stable code as in
# :data:`ERRORS`, so a client branches on it whichever API it called. Anthropic's SDK picks
# its exception class by HTTP status, which is the code's, as everywhere.

ANTHROPIC_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",  # Anthropic's "overloaded" (its own status is 529)
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    """Anthropic's ``error.type`` for a status; an unlisted 4xx is ``invalid_request_error``."""
    found = ANTHROPIC_ERROR_TYPES.get(status)
    if found is not None:
        return found
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_error_object(status: int, code: str, message: str) -> dict[str, Any]:
    """Anthropic's error body with the gateway's code, as a JSON-ready dict."""
    return {
        "type": "error",
        "error": {"type": anthropic_error_type(status), "code": code, "message": message},
    }
