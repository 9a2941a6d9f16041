"""Request ids: the one Envoy gives a request, and the gateway's own for a metered one.

A metered request gets the gateway's id as it is received (``Exchange.on_request_headers``):
it keys the usage record, and ext_proc writes it into the request's ``x-request-id``. Envoy
reads that header again after ext_proc changed it, because ext_proc makes Envoy re-pick the
route (``clear_route_cache``), and since Envoy 1.36 a route refresh refreshes the tracing
decision too (``trace_refresh_after_route_refresh``, a runtime guard removed in 1.40).
Envoy's UUID request-id extension (``source/extensions/request_id/uuid/config.cc``) keeps
that decision IN the id: for a 36-character id, character 14 is the "trace reason" (``9``
sampled, ``a`` forced by the service, ``b`` forced by the client, anything else not traced),
and ``ConnectionManagerUtility::mutateTracingRequestHeader`` reads it back. An id it cannot
read as traced is rolled again: sampled when its first 8 hex digits, modulo 10000, fall below
the sampled share times 10000 -- and then Envoy writes ``9`` into character 14 of the
header, changing the id the client, the provider and Envoy's access log see.

Hence the form of the gateway's id (:func:`new_request_id`), a UUID's 8-4-4-4-12 hex digits:

- character 14 is the trace reason Envoy packed into the id it generated (:func:`trace_reason`),
  so Envoy reads back the decision it made (a 32-digit id read as "not traced" lost the
  ingress span of every sampled metered request);
- the first 8 digits are the time in units of 2^28 ms (~3 days), times 10000, plus 9999: a
  roll on them is never sampled at a share below 1, so a request Envoy did not trace stays
  untraced and its id unchanged (at a share of 1 Envoy traces, and packs ``9`` into, every
  request). Plain UUIDv7 would put the time's top 32 bits there: a roll sampling every
  untraced request, then rewriting its id, for ~3.8 days in every ~7.6;
- the rest of the time in ms follows (16 bits before character 14, 12 after), so ids still
  sort by time (to 4 s across trace reasons, to the ms within one): the usage table's
  primary-key index grows at its end instead of on a random page, each batch insert touching
  a few pages (SQLite and PostgreSQL alike);
- character 19's top bit is 0, where every UUID Envoy generates (version 4, RFC 9562
  variant) has ``8``-``b``: no gateway id passes for Envoy's (:func:`envoys_request_id`);
- 63 random bits end it: they need to be unique, not secret (the id is echoed to the client),
  so they come from ``random``, seeded from the OS per process, not from a ``getrandom``
  system call per request.
"""

from __future__ import annotations

import random
import re
import time

NOT_TRACED = "4"  # Envoy's "not traceable" trace reason, the digit of a UUID version 4
_TRACED = frozenset("9ab")  # sampled, forced by the service, forced by the client
# A UUID with RFC 9562's variant (character 19, 8-b), as every UUID Envoy generates.
_ENVOYS_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}"
)


_time_ns = time.time_ns
_random_bits = random.getrandbits
# The id's first 14 characters (its time to 4 s), formatted again only when they change.
_prefix_of = -1
_prefix = ""


def new_request_id(reason: str = NOT_TRACED) -> str:
    """A new gateway id carrying Envoy's trace ``reason`` (see the module's docstring)."""
    global _prefix_of, _prefix
    ms = _time_ns() // 1_000_000
    if ms >> 12 != _prefix_of:
        _prefix_of = ms >> 12
        _prefix = f"{(ms >> 28) * 10_000 + 9_999:08x}-{_prefix_of & 0xFFFF:04x}-"
    bits = f"{_random_bits(63):016x}"  # 63: character 19, the first of them, is 0-7
    return f"{_prefix}{reason}{ms & 0xFFF:03x}-{bits[:4]}-{bits[4:]}"


def trace_reason(envoys_id: str) -> str:
    """The trace reason Envoy packed into its id (character 14), ``4`` when it traced nothing
    (or the id is not one of Envoy's)."""
    reason = envoys_id[14:15]
    return reason if reason in _TRACED else NOT_TRACED


def envoys_request_id(value: str) -> str:
    """The id Envoy generated for a request (a UUID, its ``x-request-id``), else a new one of ours.

    Only one of Envoy's UUIDs is taken: a gateway id can never be one (character 19), so no value
    a client sends in Envoy's place (Envoy keeps a client's ``x-request-id`` from an internal
    address) names a metered request's id.
    """
    if _ENVOYS_UUID.fullmatch(value):
        return value
    return new_request_id()
