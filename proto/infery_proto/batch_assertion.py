"""The credential a batch worker presents to the listener for one line of a batch.

A batch's lines are served through the data plane as requests of the key that created
the batch, so that auth, limits, translation, fallback and metering apply as to a live
request. Keys are stored only as hashes: the worker cannot present the key. It presents
this instead, in :data:`HEADER`: the workspace, the key and its member, the batch id, the
line's ``custom_id``, the endpoint and an expiry, with an HMAC-SHA256 over all of them
under ``DataPlaneSecret.batch_line_key`` (generated once in the control plane's store;
ext_proc receives it over xDS, the workers read it from the store; no client and no
Envoy configuration holds it).

What it cannot be used for:

- forged: without the key no one makes a valid MAC; any field changed breaks it;
- another line, batch, key, workspace or endpoint: all of them are signed;
- charged twice: ext_proc derives the request's idempotency key from the batch id and
  the ``custom_id`` (:func:`idempotency_key`), whatever the request says, so the same
  line sent again replays the first answer at no charge (or is refused while the first
  is running, or with another body);
- after :data:`LIFETIME_S`: expired;
- to a provider: ext_proc removes the header, and Envoy's routes remove every
  ``x-infery-`` request header before any upstream.

This module is shared by ``ext_proc`` (verifies) and ``control_plane`` (the worker
signs), which never import each other; it is the one definition of the format.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from infery_proto import signed_token
from infery_proto.wire import BATCH_LINE_HEADER

HEADER = BATCH_LINE_HEADER
_VERSION = "batch-line-v1"  # also the audience: no other assertion of the gateway verifies as this
# A line's request is signed just before it is sent; it only has to outlive Envoy's wait for
# the headers, and a retry signs afresh. Short, so a copy that leaked is soon worthless.
LIFETIME_S = 300


@dataclass(frozen=True, slots=True)
class BatchLine:
    """One line of a batch, as the worker sends it: whose it is and which it is."""

    workspace_id: str
    key_id: str
    member_id: str
    batch_id: str
    custom_id: str
    endpoint: str  # the batch's endpoint: the request's path


def sign(key: bytes, line: BatchLine, now: float | None = None) -> str:
    """The header value for ``line``, valid for :data:`LIFETIME_S`."""
    if not key:
        raise ValueError("no batch line key")
    expires_at = int(time.time() if now is None else now) + LIFETIME_S
    fields = (line.workspace_id, line.key_id, line.member_id, line.batch_id, line.custom_id, line.endpoint)
    return signed_token.seal(key, _VERSION, expires_at, fields)


def verify(key: bytes, value: str, now: float | None = None) -> BatchLine | None:
    """The line ``value`` asserts if signed with ``key`` and not expired; ``None`` otherwise."""
    fields = signed_token.unseal(key, _VERSION, value, 6, now=now)
    return None if fields is None else BatchLine(*fields)


def idempotency_key(batch_id: str, custom_id: str) -> str:
    """The idempotency key of a line: one per (batch, custom_id), whoever sends it, however often."""
    # Length-prefixed: no (batch id, custom_id) pair spells another's.
    digest = hashlib.sha256(f"{len(batch_id)}:{batch_id}{custom_id}".encode()).hexdigest()
    return f"batch-line:{digest}"
