"""Which headers cross the gateway, in each direction: every such decision of ext_proc, here.

Client -> gateway: the listener reads a few headers (:data:`READ_FROM_CLIENT`) and removes
the ones that would steer Envoy (:data:`CONTROL`: routing, retries, timeouts are the
gateway's) before anything else sees the request.

Gateway -> Envoy's router: a model's route (its chain's retries, its timeouts) travels with
each of its requests as Envoy's router headers (:func:`router_headers`), set over whatever
the client sent: Envoy's route configuration holds one route for every chain
(control_plane/xds/envoy_config.py: ``chain_route``), so a chain change never changes it.

Gateway -> provider: one allow-list per provider kind (:func:`request_allowed`). A provider
gets the content headers, the client's ``user-agent``, the gateway's request id and the W3C
trace context (:data:`TRACE_CONTEXT`: the client's, or the attempt's span when traced), plus the
request options its own API documents and that cannot choose the gateway's account
(``anthropic-beta`` for Anthropic). Everything else is stripped (:func:`request_removals`,
for the listener's single attempt and for every attempt of a chain alike):
``OpenAI-Organization`` / ``OpenAI-Project`` / ``x-goog-user-project`` would pick the
gateway's provider account, cookies and proxy credentials are the client's, ``x-forwarded-*``
describe the client, and the gateway's internal headers (infery_proto.wire) are its own.
The client's own credential (``authorization`` or ``x-api-key`` with its ``inf_`` key,
ext_proc/auth.py) is in no allow-list: a provider gets only the key its translator sets.
The translator's headers (credentials, versions) are set on top.

Provider -> gateway: the listener reads the status, the content type and the two markers
Envoy sets (:data:`READ_FROM_UPSTREAM`). A provider cannot set those markers at all: Envoy's
route strips them from upstream responses before ext_proc sees them (see
control_plane/xds/envoy_config.py).

Gateway -> client: the content headers and what the gateway sets; a provider's
organization, rate limits, cookies and ids stay behind (:func:`response_removals`). An
idempotent replay repeats :data:`REPLAYED` of the first answer.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from infery_proto.wire import (
    BATCH_LINE_HEADER,
    BATCH_RECOVER_HEADER,
    CHAIN_ROUTE,
    CHOICES_ERROR_HEADER,
    CHOICES_FAILED_HEADER,
    CREDITS_USED_HEADER,
    FALLBACK_FROM_HEADER,
    IDEMPOTENCY_KEY_HEADER,
    LOCAL_REPLY_HEADER,
    MODEL_ROUTE_HEADER,
    MODEL_USED_HEADER,
    PARENT_REQUEST_HEADER,
    REQUEST_ID_HEADER,
    RETRY_AFTER_HEADER,
    ROUTE_HEADER,
    SERVED_HEADER,
)

# -- client -> gateway ------------------------------------------------------------------------
# The client's key comes as a bearer token or in ``x-api-key`` (Anthropic's way; ext_proc/auth.py);
# content-type and -length: an upload's form boundary and size (ext_proc/upload_intake.py).
READ_FROM_CLIENT = frozenset(
    {
        ":path",
        ":method",
        "authorization",
        "x-api-key",
        "content-type",
        "content-length",
        IDEMPOTENCY_KEY_HEADER,
        REQUEST_ID_HEADER,  # Envoy's: the id of a request answered in the headers phase
        "traceparent",  # the request span's parent when Envoy does not trace (ext_proc/tracing.py)
        "tracestate",
        BATCH_LINE_HEADER,  # a batch worker's credential for one line (ext_proc/batch_gate.py)
        BATCH_RECOVER_HEADER,  # with it: a batch finalizer asking what became of the line
        PARENT_REQUEST_HEADER,  # an emulated n's extra choice: its client's request (ext_proc/parent_link.py)
    }
)
# Envoy's router headers ext_proc sets from a model's route (:func:`router_headers`).
TOTAL_TIMEOUT = "x-envoy-upstream-rq-timeout-ms"
ATTEMPT_TIMEOUT = "x-envoy-upstream-rq-per-try-timeout-ms"
MAX_RETRIES = "x-envoy-max-retries"
RETRY_ON = "x-envoy-retry-on"
RETRIABLE_STATUS_CODES = "x-envoy-retriable-status-codes"
# Headers a client must not set: routing, retries and timeouts are the gateway's. The x-envoy-*
# ones are every request header Envoy's router reads. Envoy strips most from every client
# already (the listener trusts no address as internal), but not all: a client's
# x-envoy-upstream-stream-duration-ms cut each attempt of a chain (a reset, so the next target
# was tried). ext_proc removes them all (its mutation rules allow it: ``allow_envoy``).
CONTROL = (
    ROUTE_HEADER,
    MODEL_ROUTE_HEADER,
    TOTAL_TIMEOUT,
    ATTEMPT_TIMEOUT,
    MAX_RETRIES,
    RETRY_ON,
    "x-envoy-retry-grpc-on",
    RETRIABLE_STATUS_CODES,
    "x-envoy-retriable-header-names",
    "x-envoy-hedge-on-per-try-timeout",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-stream-duration-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-expected-rq-timeout-ms",
    BATCH_LINE_HEADER,  # read by ext_proc, then gone: it goes no further than the listener
    BATCH_RECOVER_HEADER,
    PARENT_REQUEST_HEADER,  # the same
)
_CONTROL_SET = frozenset(CONTROL)

# -- gateway -> Envoy's router ------------------------------------------------------------------
# A route's triggers (the admin API's ``retry_on``) -> Envoy's retry conditions. Envoy's "reset"
# covers a per-try timeout as well as a reset ("does not respond at all"), so "timeout" and
# "reset" share it; 429 is a retriable status code.
_RETRY_CONDITIONS = {
    "5xx": "5xx",
    "429": "retriable-status-codes",
    "reset": "reset",
    "timeout": "reset",
    "connect_failure": "connect-failure",
}


def router_headers(
    retry_on: Iterable[str], retries: int, attempt_timeout_s: float, total_timeout_s: float, chain: bool
) -> tuple[tuple[str, str], ...]:
    """What Envoy's router is told for one of a route's requests, computed once per route.

    ``chain``: the request goes to a chain's cluster (or its model's provider, for an endpoint
    a chain does not serve), by the chain route, with ``retries`` retries (one per fallback the
    cluster holds) on ``retry_on``. Envoy merges these with that route's policy
    (``chain_route``): the conditions are OR-ed with its own (none), the count replaces its
    ``num_retries`` (0: nothing is retried without it), status codes are added to its own
    (none). Each timeout, when the route sets one, replaces the route's (the gateway's request
    timeout); a per-try timeout at or above the total one is ignored by Envoy, as it was in
    the route. Otherwise (a model with a route and no chain) the timeouts alone, on the
    default route.
    """
    out: list[tuple[str, str]] = []
    if chain:
        out.append((MODEL_ROUTE_HEADER, CHAIN_ROUTE))
        triggers = set(retry_on)
        conditions = sorted({_RETRY_CONDITIONS[t] for t in triggers if t in _RETRY_CONDITIONS})
        if retries and conditions:
            out += [(RETRY_ON, ",".join(conditions)), (MAX_RETRIES, str(retries))]
            if "429" in triggers:
                out.append((RETRIABLE_STATUS_CODES, "429"))
    if attempt_timeout_s > 0:
        out.append((ATTEMPT_TIMEOUT, str(round(attempt_timeout_s * 1000))))
    if total_timeout_s > 0:
        out.append((TOTAL_TIMEOUT, str(round(total_timeout_s * 1000))))
    return tuple(out)


# -- gateway -> provider ----------------------------------------------------------------------
_CONTENT = frozenset({"content-type", "content-length", "accept"})
# x-forwarded-proto is Envoy's (it routes on it; removing it left the request unrouted).
# W3C trace context: passed on as the client sent it while the gateway does not trace; when it
# does, each attempt sets its own ``traceparent`` (its span: ext_proc/tracing.py) over it.
TRACE_CONTEXT = frozenset({"traceparent", "tracestate"})
_REQUEST_COMMON = _CONTENT | TRACE_CONTEXT | {"user-agent", REQUEST_ID_HEADER, "x-forwarded-proto"}
# Request options each provider documents that do not select an account.
_REQUEST_OPTIONS: dict[str, frozenset[str]] = {
    "anthropic": frozenset({"anthropic-beta"}),
}
_REQUEST_ALLOWED = {kind: _REQUEST_COMMON | options for kind, options in _REQUEST_OPTIONS.items()}

# -- provider -> gateway -> client ------------------------------------------------------------
READ_FROM_UPSTREAM = frozenset({":status", "content-type", LOCAL_REPLY_HEADER, SERVED_HEADER})
RESPONSE_ALLOWED = _CONTENT | {"date", "cache-control", REQUEST_ID_HEADER, RETRY_AFTER_HEADER}
# Response headers kept with an idempotent response and replayed with it.
REPLAYED = (
    "content-type",
    MODEL_USED_HEADER,
    FALLBACK_FROM_HEADER,
    CREDITS_USED_HEADER,
    CHOICES_FAILED_HEADER,
    CHOICES_ERROR_HEADER,
)


def names(headers: ep.HttpHeaders) -> tuple[str, ...]:
    """Every regular (non-pseudo) header name of a message, as Envoy sends them (lower case)."""
    return tuple(h.key for h in headers.headers.headers if h.key[:1] != ":")


def read_client(headers: ep.HttpHeaders) -> tuple[dict[str, str], tuple[str, ...]]:
    """What the gateway reads of a client's request headers (:data:`READ_FROM_CLIENT`, values
    as Envoy sends them, in ``raw_value``), and the names of the client's headers that remain
    once the :data:`CONTROL` headers are removed. One pass: each header read from the protobuf
    costs an object and a string, and the request headers phase is on every request."""
    wanted: dict[str, str] = {}
    kept: list[str] = []
    for h in headers.headers.headers:
        key = h.key
        if key in READ_FROM_CLIENT:
            raw = h.raw_value
            wanted[key] = raw.decode("latin-1") if raw else h.value
        if key[:1] != ":" and key not in _CONTROL_SET:
            kept.append(key)
    return wanted, tuple(kept)


def request_allowed(kind: str) -> frozenset[str]:
    """The client headers a provider of ``kind`` may receive."""
    return _REQUEST_ALLOWED.get(kind, _REQUEST_COMMON)


def request_removals(kind: str, present: Iterable[str], setting: Collection[str]) -> list[str]:
    """The headers to strip before a provider of ``kind``: present, not allowed, not being set now."""
    allowed = request_allowed(kind)
    return [name for name in present if name not in allowed and name not in setting]


def response_removals(headers: ep.HttpHeaders, setting: Iterable[tuple[str, str]]) -> list[str]:
    """The provider's response headers the client must not get (those the gateway sets aside)."""
    set_now = {name for name, _ in setting}
    return [name for name in names(headers) if name not in RESPONSE_ALLOWED and name not in set_now]
