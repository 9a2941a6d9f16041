"""What crosses between a client and a provider: one allow-list per direction.

Request headers: a provider gets the content headers, the client's ``user-agent``
and the gateway's request id, plus the request options its own API documents and
that cannot choose the gateway's account (``anthropic-beta`` for Anthropic). Everything else
is stripped: ``OpenAI-Organization`` / ``OpenAI-Project`` / ``x-goog-user-project``
would pick the gateway's provider account, cookies and proxy credentials are the
client's, ``x-forwarded-*`` describe the client, and the gateway's internal headers
(infery_proto.wire) are its own. The translator's headers (credentials, versions) are set on top.

Response headers: the client gets the content headers and what the gateway sets;
a provider's organization, rate limits, cookies and ids stay behind. (A provider
cannot set the gateway's internal markers at all: Envoy's route strips them from
upstream responses before ext_proc sees them; see control_plane/xds/envoy_config.py.)
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from infery_proto.wire import REQUEST_ID_HEADER, RETRY_AFTER_HEADER

_CONTENT = frozenset({"content-type", "content-length", "accept"})
# x-forwarded-proto is Envoy's (it routes on it; removing it left the request unrouted).
_REQUEST_COMMON = _CONTENT | {"user-agent", REQUEST_ID_HEADER, "x-forwarded-proto"}
# Request options each provider documents that do not select an account.
_REQUEST_OPTIONS: dict[str, frozenset[str]] = {
    "anthropic": frozenset({"anthropic-beta"}),
}
_REQUEST_ALLOWED = {kind: _REQUEST_COMMON | options for kind, options in _REQUEST_OPTIONS.items()}
RESPONSE_ALLOWED = _CONTENT | {"date", "cache-control", REQUEST_ID_HEADER, RETRY_AFTER_HEADER}


def request_allowed(kind: str) -> frozenset[str]:
    """The client headers a provider of ``kind`` may receive."""
    return _REQUEST_ALLOWED.get(kind, _REQUEST_COMMON)


def names(headers: ep.HttpHeaders) -> tuple[str, ...]:
    """Every regular (non-pseudo) header name of a message, as Envoy sends them (lower case)."""
    return tuple(h.key for h in headers.headers.headers if h.key[:1] != ":")


def request_removals(kind: str, present: Iterable[str], setting: Collection[str]) -> list[str]:
    """The headers to strip before a provider of ``kind``: present, not allowed, not being set now."""
    allowed = request_allowed(kind)
    return [name for name in present if name not in allowed and name not in setting]


def response_removals(present: Iterable[str], setting: Collection[str]) -> list[str]:
    """The provider's response headers the client must not get."""
    return [name for name in present if name not in RESPONSE_ALLOWED and name not in setting]
