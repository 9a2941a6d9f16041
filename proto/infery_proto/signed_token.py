"""One format for the gateway's short-lived signed values.

Four values cross a boundary carrying who may do what: the attempt grant (ext_proc's listener
→ its upstream filter, through Envoy's metadata), the files identity (ext_proc → the files
service, through Envoy), the batch line credential (a batch worker → the listener) and the
parent link (ext_proc → its own listener: an emulated n's extra choice names the client's
request, ext_proc/parent_link.py). Each is
``audience.expiry.field….mac``: every field base64url (so any character, the separator
included, survives), the expiry in unix seconds, and an HMAC-SHA256 over all of it plus a
``context`` the value is bound to without carrying it (the files identity's method and path).
The audience is the first field and is covered by the MAC, so a value made for one purpose
never verifies as another, even under the same key. Verification answers ``None`` for anything
wrong — the caller refuses either way and an attacker learns nothing from which check failed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _unb64(text: str) -> str:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()


def _mac(key: bytes, payload: str, context: str) -> str:
    digest = hmac.new(key, f"{payload}\n{context}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def seal(key: bytes, audience: str, expires_at: int, fields: Sequence[str], context: str = "") -> str:
    """The value asserting ``fields`` for ``audience`` until ``expires_at``, bound to ``context``.
    Sealed with no key, it is made but never verifies (:func:`unseal` refuses an empty key)."""
    payload = ".".join((audience, str(expires_at), *map(_b64, fields)))
    return f"{payload}.{_mac(key, payload, context)}"


def unseal(
    key: bytes, audience: str, value: str, count: int, context: str = "", now: float | None = None
) -> list[str] | None:
    """The ``count`` fields ``value`` asserts, if it was sealed with ``key`` for ``audience`` and
    ``context`` and has not expired; ``None`` otherwise."""
    if not key or not value:
        return None
    payload, _, mac = value.rpartition(".")
    parts = payload.split(".")
    if len(parts) != count + 2 or parts[0] != audience or not parts[1].isdigit():
        return None
    if not hmac.compare_digest(mac, _mac(key, payload, context)):
        return None
    if int(parts[1]) < (time.time() if now is None else now):
        return None
    try:
        return [_unb64(part) for part in parts[2:]]
    except (ValueError, UnicodeDecodeError):
        return None
