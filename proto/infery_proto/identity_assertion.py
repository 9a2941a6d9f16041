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

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

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


def _mac(key: bytes, payload: str, method: str, path: str) -> str:
    message = f"{payload}\n{method.upper()}\n{path}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(key: bytes, identity: Identity, method: str, path: str, now: float | None = None) -> str:
    """The header value asserting ``identity`` for one ``method`` on one ``path`` (query included)."""
    expires_at = int(time.time() if now is None else now) + LIFETIME_S
    fields = (identity.request_id, identity.workspace_id, identity.member_id, identity.key_id)
    if any("." in f or not f for f in fields):
        raise ValueError("identity fields must be non-empty and free of '.'")
    payload = ".".join((_VERSION, str(expires_at), *fields))
    return f"{payload}.{_mac(key, payload, method, path)}"


def verify(key: bytes, value: str, method: str, path: str, now: float | None = None) -> Identity | None:
    """The identity ``value`` asserts for this ``method`` and ``path`` if signed with ``key`` and
    not expired; ``None`` otherwise (whatever is wrong with it: the caller answers 401 either way)."""
    if not key or not value:
        return None
    payload, _, mac = value.rpartition(".")
    parts = payload.split(".")
    if len(parts) != 6 or parts[0] != _VERSION or not parts[1].isdigit():
        return None
    if not hmac.compare_digest(mac, _mac(key, payload, method, path)):
        return None
    if int(parts[1]) < (time.time() if now is None else now):
        return None
    return Identity(parts[2], parts[3], parts[4], parts[5])
