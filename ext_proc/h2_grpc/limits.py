"""What one peer may make a connection hold or do, and why each value.

ext_proc's one legitimate peer is Envoy (its ext_proc filters and its health checker),
so every bound here sits far above what Envoy does and far below what hurts: memory a
connection holds is bounded by these numbers, not by what a peer sends, and the frames
that make the server work without a request being served (streams opened and reset at
once, PINGs, SETTINGS) have a budget. A breach is a connection error: GOAWAY with
ENHANCE_YOUR_CALM (or the RFC's code for a malformed frame) and the connection closes;
Envoy would open a new one. The limits are per connection: a peer that opens many
connections is bounded by who can reach the socket at all (the Unix socket's directory,
the TCP listener's token checked per stream).

What Envoy does, measured (tests/e2e with a counting build): it opens one stream per
request and resets it (RST_STREAM CANCEL) once its filter is done, after the server has
answered, so a reset is no sign of abuse by itself; it sends one SETTINGS and no PING
(no keepalive in envoy/bootstrap.yaml). grpcio, the other client the tests use, sent at
most two SETTINGS and two PINGs per connection in tests/ext_proc/h2_grpc/test_h2_grpc_server.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

MAX_MESSAGE = 64 * 1024 * 1024
"""The largest gRPC message taken, in bytes (larger: RESOURCE_EXHAUSTED). A request body
Envoy buffers for ext_proc is at most ``INFERY_MAX_REQUEST_BYTES`` (32 MiB by default) plus
its protobuf framing; twice that leaves room without letting one message take the heap."""

MAX_FRAME = 1 << 20
"""SETTINGS_MAX_FRAME_SIZE we advertise: the largest frame a peer may send, so the most a
partial frame makes the connection buffer. 1 MiB: Envoy sends a large body in few frames
(fewer reads and calls), and a larger frame saves nothing more."""

MAX_CONCURRENT_STREAMS = 16_384
"""SETTINGS_MAX_CONCURRENT_STREAMS we advertise; a stream beyond it is refused (RST_STREAM
REFUSED_STREAM). Envoy opens another connection when one reaches it. Each open stream holds
at most one message of unread input (its window), a task and a few hundred bytes: with the
connection window (below) bounding input, 16,384 streams are a few MiB of state, and far
more requests in flight than one ext_proc process serves."""

CONNECTION_WINDOW_MESSAGES = 4
"""The connection's receive window, in streams' windows (each is one message). Window is
handed back as handlers take messages, so unread input on a connection is at most four
largest messages: Envoy sends one message per reply, so four keep every stream moving. The
same window bounds what declared lengths may make a connection allocate ahead of the data
(a large message's buffer made at its full size: connection.py ``_make_room``)."""

WRITE_BUFFER_HIGH = 4 * 1024 * 1024
"""Bytes queued for a peer that does not read, beyond which the connection stops reading
it (asyncio's write-buffer high-water mark). A peer that sends PINGs, SETTINGS or requests
but never reads the answers is then not read either: what it can make us queue is bounded."""

MAX_HEADER_BLOCK = 16 * 1024
"""The largest header block (HEADERS plus its CONTINUATIONs), in bytes, and the largest
decoded header list (SETTINGS_MAX_HEADER_LIST_SIZE, advertised). Each CONTINUATION frame also
costs its 9-byte head, so a flood of empty CONTINUATIONs (CVE-2024-27316) runs out of budget
too. Envoy's stream headers to ext_proc are under 1 KiB (the HTTP request's own headers
travel inside the protobuf messages); gRPC's own default metadata limit is 8 KiB. Above it:
ENHANCE_YOUR_CALM. The bound is also on CPU: pure-Python HPACK decodes ~7 MB/s (a 16 KiB
Huffman-coded block, ~1.4 ms), and nothing is decoded before the whole block is in."""

MAX_SETTINGS_PER_FRAME = 32
"""Entries in one SETTINGS frame. RFC 9113 defines six settings and extensions a few more;
a peer repeating them hundreds of times in one frame (a 1 MiB frame holds 174,762) is only
making the server work. Above it: ENHANCE_YOUR_CALM."""


@dataclass(frozen=True, slots=True)
class Rate:
    """A budget of events: ``burst`` at once, refilled at ``per_second`` (a token bucket)."""

    burst: int
    per_second: float


PREMATURE_RESETS = Rate(burst=1_000, per_second=33.0)
"""Streams the peer resets before the server answered anything on them, plus streams it opens
beyond MAX_CONCURRENT_STREAMS (refused): the "rapid reset" attack (CVE-2023-44487) opens and
resets streams in a loop, so that each costs the server a stream and a handler task while
never counting against the concurrency limit. Envoy resets every stream, but after the answer
(see above): those are not counted. It resets a stream before any answer only when its client
hangs up within the microseconds before the first reply, or when ext_proc missed the message
timeout (5 s). The values are nghttp2's (its fix for the same attack: a burst of 1,000, then 33
per second), applied here to premature resets only."""

PINGS = Rate(burst=100, per_second=10.0)
"""PINGs (each needs an answer). Envoy sends none to ext_proc; a client's keepalive sends one
every few seconds and gRPC's bandwidth probes a few per connection. A ping flood (CVE-2019-9512)
sends millions: cut after a hundred."""

SETTINGS_FRAMES = Rate(burst=20, per_second=2.0)
"""SETTINGS frames (each needs an ACK, and a new initial window size walks every open stream).
Envoy sends one per connection; gRPC's flow-control tuning a few more (CVE-2019-9515 floods
them)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The values one server applies to each of its connections (tests lower them)."""

    max_concurrent_streams: int = MAX_CONCURRENT_STREAMS
    max_header_block: int = MAX_HEADER_BLOCK
    max_settings_per_frame: int = MAX_SETTINGS_PER_FRAME
    premature_resets: Rate = field(default=PREMATURE_RESETS)
    pings: Rate = field(default=PINGS)
    settings_frames: Rate = field(default=SETTINGS_FRAMES)


DEFAULT_LIMITS = Limits()


class Budget:
    """One connection's budget of one kind of event, drawn from a :class:`Rate`.

    Only the events counted call it (none on the hot path of a request).
    """

    __slots__ = ("_clock", "_rate", "_tokens", "_updated")

    def __init__(self, rate: Rate, clock: Callable[[], float]) -> None:
        self._rate, self._clock = rate, clock
        self._tokens = float(rate.burst)
        self._updated = clock()

    def spend(self) -> bool:
        """One event: whether the budget allowed it."""
        now = self._clock()
        rate = self._rate
        self._tokens = min(float(rate.burst), self._tokens + (now - self._updated) * rate.per_second)
        self._updated = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True
