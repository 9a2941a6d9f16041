"""The identity the data plane asserts to the files service, and how the service checks it.

``/v1/files`` requests are not read by ext_proc past their headers: ext_proc
authenticates the client's ``inf_`` key, then Envoy streams the body straight to
the files service (control_plane/files/). That service never sees the key, so
ext_proc tells it who the caller is in :data:`HEADER`: the workspace, member and
key, the request id and an expiry, with an HMAC-SHA256 over them *and over the
request's method and path*, so an assertion made for ``GET /v1/files/a`` cannot
be replayed as ``DELETE /v1/files/b``.

The key (``DataPlaneSecret.files_identity_key``) is generated once and kept in
the control plane's store: ext_proc receives it over xDS (Envoy never does), the
files service reads it from the store. A client cannot set the header: ext_proc
overwrites whatever the client sent, and without the key nobody can sign one.

This module is shared by ``ext_proc`` (signs) and ``control_plane`` (verifies),
which never import each other; it is the one definition of the format.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from infery_proto import signed_token
from infery_proto.wire import IDENTITY_HEADER

HEADER = IDENTITY_HEADER
_VERSION = "files-v1"  # also names the audience: an attempt grant never verifies as this
# Short: the service checks the assertion as soon as Envoy forwards the headers, which is
# right after ext_proc made it. The margin covers clock skew between machines.
LIFETIME_S = 60


@dataclass(frozen=True, slots=True)
class Identity:
    """Who makes a files request, as ext_proc authenticated it."""

    request_id: str
    workspace_id: str
    member_id: str
    key_id: str


def _context(method: str, path: str) -> str:
    return f"{method.upper()}\n{path}"


def sign(key: bytes, identity: Identity, method: str, path: str, now: float | None = None) -> str:
    """The header value asserting ``identity`` for one ``method`` on one ``path`` (query included)."""
    expires_at = int(time.time() if now is None else now) + LIFETIME_S
    fields = (identity.request_id, identity.workspace_id, identity.member_id, identity.key_id)
    if not all(fields):
        raise ValueError("identity fields must be non-empty")
    return signed_token.seal(key, _VERSION, expires_at, fields, _context(method, path))


def verify(key: bytes, value: str, method: str, path: str, now: float | None = None) -> Identity | None:
    """The identity ``value`` asserts for this ``method`` and ``path`` if signed with ``key`` and
    not expired; ``None`` otherwise (whatever is wrong with it: the caller answers 401 either way)."""
    fields = signed_token.unseal(key, _VERSION, value, 4, _context(method, path), now)
    return None if fields is None else Identity(*fields)
