"""The link from an emulated n's extra choice to the request the client made.

Each extra choice is a request of its own (ext_proc/extra_choices.py), with its own usage
record; ``parent_request_id`` on that record names the client's request, so that the n records
of one answer can be found together. A header a client could set would let it hang its
requests' records under any other request id, so the link is signed: the exchange that asks for
the extra choices seals the client's request id, its workspace and its key with the data
plane's key (the attempt-grant key, ``infery.v1.DataPlaneSecret``: only ext_proc holds it; the
audience keeps the two purposes apart, infery_proto.signed_token), and the exchange that
receives an extra choice takes the link only if it verifies, has not expired and names the key
the request authenticated with. Anything else is ignored: the request is served as any other,
with no parent.
"""

from __future__ import annotations

from dataclasses import dataclass

from infery_proto import signed_token

_AUDIENCE = "parent-v1"  # no other signed value of the gateway verifies as this


@dataclass(frozen=True, slots=True)
class Parent:
    request_id: str  # the client's request
    workspace_id: str
    key_id: str  # the key it authenticated with, which each extra choice presents too


def sign(key: bytes, parent: Parent, expires_at: int) -> str:
    """The header value linking a request to ``parent`` until ``expires_at`` (unix seconds)."""
    fields = (parent.request_id, parent.workspace_id, parent.key_id)
    return signed_token.seal(key, _AUDIENCE, expires_at, fields)


def verify(key: bytes, value: str, workspace_id: str, key_id: str, now: float | None = None) -> str:
    """The parent request id ``value`` links to, if it is signed with ``key``, unexpired, and made
    for a request of this workspace and key; "" otherwise."""
    fields = signed_token.unseal(key, _AUDIENCE, value, 3, now=now)
    if fields is None or fields[1] != workspace_id or fields[2] != key_id:
        return ""
    return fields[0]
