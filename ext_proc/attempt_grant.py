"""The grant that lets an upstream attempt of a fallback chain act for a request.

Envoy's upstream ext_proc filter asks ext_proc to prepare each attempt of a
chain: the attempt's reply carries the provider's credential. Anything that can
open a stream to ext_proc could ask the same, so the listener's exchange, which
has authenticated the client's ``inf_`` key, gives the chain's request a grant in
Envoy's dynamic metadata (infery_proto.wire ``ATTEMPT_METADATA``/``GRANT_FIELD``): an
HMAC-SHA256 over the request id, the workspace, the member and an expiry
(infery_proto.signed_token). An attempt serves only a request whose grant verifies and has
not expired, and it reads the workspace from it (whose policy applies to the target).
Metadata is Envoy's own: it never reaches a provider.

The key comes from the control plane over xDS in a resource only ext_proc
processes subscribe to (``infery.v1.DataPlaneSecret``): it is generated once and
kept in the control plane's store, so every ext_proc process of every replica
signs and verifies with the same key, and Envoy (whose configuration its admin
page shows) never holds it.
"""

from __future__ import annotations

from dataclasses import dataclass

from infery_proto import signed_token

_VERSION = "attempt-v1"  # the audience: no other signed value of the gateway verifies as this


@dataclass(frozen=True, slots=True)
class Grant:
    request_id: str
    workspace_id: str
    member_id: str


def sign(key: bytes, grant: Grant, expires_at: int) -> str:
    """The header value granting ``grant`` until ``expires_at`` (unix seconds)."""
    return signed_token.seal(
        key, _VERSION, expires_at, (grant.request_id, grant.workspace_id, grant.member_id)
    )


def verify(key: bytes, value: str, now: float | None = None) -> Grant | None:
    """The grant ``value`` carries if it is signed with ``key`` and still valid, else ``None``."""
    fields = signed_token.unseal(key, _VERSION, value, 3, now=now)
    return None if fields is None else Grant(*fields)
