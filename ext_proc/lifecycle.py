"""The states of one request through the listener's exchange, and the moves allowed between them.

Each ext_proc message moves the exchange (ext_proc/exchange.py) from one named state to the
next; three states are final, and reaching one is the request's single exit, where
ext_proc/settlement.py charges it, settles its limits, keeps or releases its idempotency
key and writes its usage record -- once.

::

    NEW ──headers──▶ RECEIVED ──body──▶ ADMITTED ──▶ ROUTED ──headers──▶ RESPONDING ──body──▶ FINISHED
     │                  │                  │  │         │  └──SSE──▶ STREAMING ──last chunk──▶ FINISHED
     │                  │                  │  │         └──the gateway's own error──▶ FAILING ──body──▶ FAILED
     │                  │                  │  └─upload─▶ UPLOADING ──last chunk──▶ ROUTED
     │                  │                  │               └──answered before its end──▶ RESPONDING,
     │                  │                  │                  FAILING, FINISHED, FAILED; refused: FAILED
     └─ refused ────────┴─ refused ────────┴─ refused, or replayed (FINISHED)
    any state not final ──client gone / Envoy reset──▶ ABANDONED (FAILING: FAILED)
    any state not final ──internal error──▶ FAILED

========== =============================================================================
state      meaning
========== =============================================================================
NEW        nothing seen yet
RECEIVED   request headers accepted: a known endpoint, an authenticated key; body to come
ADMITTED   body valid, limits admitted (tokens reserved), idempotency key claimed; routing
           (and fetching media) under way
UPLOADING  an upload (``RequestBody.STREAMED``: audio) routed while its body still passes,
           chunk by chunk, each rewritten for the provider (ext_proc/upload_intake.py)
ROUTED     sent upstream: to one provider, translated, or to a fallback chain's cluster
           (an upload: its last chunk included)
RESPONDING response headers in; a buffered body to come
STREAMING  an SSE answer passing chunk by chunk; what reaches the client is counted
FAILING    the gateway's own error reply (an Envoy local reply: timeout, no target,
           413...) whose body is still to come
FINISHED   answered in full from upstream (the provider's answer, success or error), or
           from the gateway itself (an idempotent replay, the model list)
FAILED     refused or failed by the gateway: its own error envelope (bad request, limits,
           a local reply, an internal error)
ABANDONED  the ext_proc stream ended before the answer was complete: the client left or
           Envoy reset the request; recorded as 499 ``stream_interrupted``
========== =============================================================================

A move that :data:`TRANSITIONS` does not allow is a bug (or Envoy messages out of
order): the exchange logs it and settles the request as failed rather than carry on in a
state nobody designed. A final state allows no move at all, which is what makes the exit
happen once.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum


class State(Enum):
    # Members are singletons: hashing by identity keeps a move's table lookups in C
    # (Enum's own hash is a Python call, twice per move).
    __hash__ = object.__hash__

    NEW = "new"
    RECEIVED = "received"
    ADMITTED = "admitted"
    UPLOADING = "uploading"
    ROUTED = "routed"
    RESPONDING = "responding"
    STREAMING = "streaming"
    FAILING = "failing"
    FINISHED = "finished"
    FAILED = "failed"
    ABANDONED = "abandoned"


NEW = State.NEW
RECEIVED = State.RECEIVED
ADMITTED = State.ADMITTED
UPLOADING = State.UPLOADING
ROUTED = State.ROUTED
RESPONDING = State.RESPONDING
STREAMING = State.STREAMING
FAILING = State.FAILING
FINISHED = State.FINISHED
FAILED = State.FAILED
ABANDONED = State.ABANDONED

FINAL = frozenset({FINISHED, FAILED, ABANDONED})

# Where each state may go. FAILED and ABANDONED are reachable from every state that is not
# final (an internal error, the client leaving); the rest is the request's own path.
TRANSITIONS: Mapping[State, frozenset[State]] = {
    # Headers refused -> FAILED; the model list -> FINISHED.
    NEW: frozenset({RECEIVED, FINISHED, FAILED, ABANDONED}),
    # Body refused -> FAILED; Envoy's own reply while the body is buffered (413, 408) -> FAILING.
    RECEIVED: frozenset({ADMITTED, FAILING, FAILED, ABANDONED}),
    # A replay -> FINISHED; the idempotency key, translation or media refused -> FAILED; an
    # upload whose body has not all passed yet -> UPLOADING.
    ADMITTED: frozenset({ROUTED, UPLOADING, FINISHED, FAILED, ABANDONED}),
    # Its last chunk -> ROUTED. The provider (or Envoy) may answer before the upload ends: read
    # whole (RESPONDING), the gateway's own error (FAILING), or one with no body (FINISHED,
    # FAILED); a chunk refused (the form, its size, a field after the model) -> FAILED.
    UPLOADING: frozenset({ROUTED, RESPONDING, FAILING, FINISHED, FAILED, ABANDONED}),
    # Headers-only answers end at once (FINISHED, or FAILED for the gateway's own).
    ROUTED: frozenset({RESPONDING, STREAMING, FAILING, FINISHED, FAILED, ABANDONED}),
    RESPONDING: frozenset({FINISHED, FAILED, ABANDONED}),
    STREAMING: frozenset({FINISHED, FAILED, ABANDONED}),
    # The client leaving does not undo the gateway's own error: FAILING ends FAILED either way.
    FAILING: frozenset({FAILED}),
    FINISHED: frozenset(),
    FAILED: frozenset(),
    ABANDONED: frozenset(),
}


def allowed(current: State, new: State) -> bool:
    """Whether ``current`` may move to ``new``."""
    return new in TRANSITIONS[current]


class IllegalMove(Exception):
    """A move :data:`TRANSITIONS` does not allow, or a message the current state expects none of.

    A bug, or Envoy's messages out of order: the dispatch (ext_proc/server.py) logs it and
    settles the request as FAILED (500 ``internal_error``); never a state nobody designed.
    """

    def __init__(self, current: State, new: State) -> None:
        super().__init__(f"illegal move {current.name} -> {new.name}")
        self.current = current
        self.new = new
