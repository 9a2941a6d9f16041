"""Attacks on ext_proc's HTTP/2 server, each cut with the right GOAWAY and bounded memory and work.

Each test is an attacker: raw frames built by hand (hyperframe, hpack) fed to one server
connection on an in-memory transport, and what the server wrote read back. The limits are
ext_proc/h2_grpc/limits.py's, at their real values unless a test says otherwise; the
counterpart tests show what Envoy really does (answered streams reset by the thousand, a
peer that sends within the windows) is never cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import hpack
import pytest
import pytest_asyncio
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from ext_proc.h2_grpc import Connection, Method, Server
from ext_proc.h2_grpc.limits import (
    MAX_HEADER_BLOCK,
    MAX_SETTINGS_PER_FRAME,
    PINGS,
    PREMATURE_RESETS,
    SETTINGS_FRAMES,
    Budget,
    Limits,
    Rate,
)
from tests.ext_proc.h2_grpc.peers import (
    PREFACE,
    MemoryTransport,
    grpc_frame,
    identity,
    memory_connection,
    request_headers,
)

HELD, ECHO = "/t.T/Held", "/t.T/Echo"


class Attack:
    """One connection to a server whose handlers count their starts; ``Held`` never answers."""

    def __init__(self, max_message: int = 1 << 20, limits: Limits | None = None) -> None:
        self.started = 0

        async def held(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            self.started += 1
            await asyncio.Event().wait()
            yield b""

        async def echo(requests: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            self.started += 1
            async for message in requests:
                yield message

        methods = {HELD: Method(held, identity, identity), ECHO: Method(echo, identity, identity)}
        extra = {} if limits is None else {"limits": limits}
        self.server = Server(methods, max_message=max_message, **extra)  # type: ignore[arg-type]
        self.connection: Connection
        self.transport: MemoryTransport
        self.encoder = hpack.Encoder()
        self.out: list[Frame] = []

    def open(self, *, ack_settings: bool = True) -> None:
        """The client preface, its SETTINGS, and (as a client would) the ACK of the server's."""
        self.connection, self.transport = memory_connection(self.server)
        ack = SettingsFrame(0, flags=["ACK"]).serialize() if ack_settings else b""
        self.send(PREFACE + SettingsFrame(0).serialize() + ack)

    def headers(self, stream_id: int, path: str = HELD, **flags: bool) -> bytes:
        names = ["END_HEADERS", *(name.upper() for name, on in flags.items() if on)]
        return HeadersFrame(stream_id, self.encoder.encode(request_headers(path)), flags=names).serialize()

    def send(self, data: bytes) -> None:
        self.connection.data_received(data)

    async def settle(self) -> list[Frame]:
        """Lets handlers and the connection's flush run; returns every frame written since last time."""
        for _ in range(5):
            await asyncio.sleep(0)
        data = self.transport.take()
        new = []
        while data:
            frame, length = Frame.parse_frame_header(memoryview(data[:9]))
            frame.parse_body(memoryview(data[9 : 9 + length]))
            new.append(frame)
            data = data[9 + length :]
        self.out += new
        return new

    def goaway(self) -> GoAwayFrame | None:
        goaways = [f for f in self.out if isinstance(f, GoAwayFrame)]
        assert len(goaways) <= 1, goaways
        return goaways[0] if goaways else None

    def assert_cut(self, code: ErrorCodes) -> None:
        """GOAWAY with ``code``, as the last frame, and the connection closed; later input is ignored."""
        goaway = self.goaway()
        assert goaway is not None and ErrorCodes(goaway.error_code) == code, goaway
        assert self.out[-1] is goaway and self.transport.closed
        before = (self.started, len(self.connection._streams))
        self.send(self.headers(10_001) + PingFrame(0, b"12345678").serialize())
        assert (self.started, len(self.connection._streams)) == before and self.transport.take() == b""

    def close(self) -> None:
        self.connection.connection_lost(None)


@pytest_asyncio.fixture(loop_scope="function")  # the test's own loop runs the connection
async def attack() -> AsyncIterator[Attack]:
    attack = Attack()
    attack.open()
    await attack.settle()
    yield attack
    attack.close()


# ---------------------------------------------------------------------------- rapid reset


async def test_rapid_reset_is_cut_before_it_costs_more_than_its_budget(attack: Attack) -> None:
    """CVE-2023-44487: open a stream, reset it at once, again and again. Each would cost a stream
    and a handler task while the concurrency limit never sees more than one open."""
    stream_id = 1
    for _ in range(2 * PREMATURE_RESETS.burst // 100):  # reads of 100 open-and-reset pairs
        pairs = []
        for _ in range(100):
            pairs.append(attack.headers(stream_id) + RstStreamFrame(stream_id, 8).serialize())
            stream_id += 2
        attack.send(b"".join(pairs))
        await attack.settle()
        if attack.transport.closed:
            break
    attack.assert_cut(ErrorCodes.ENHANCE_YOUR_CALM)
    assert stream_id // 2 <= PREMATURE_RESETS.burst + 100  # cut within a read of the budget
    assert attack.connection._streams == {}


async def test_streams_reset_after_their_answer_are_envoys_normal_and_never_cut(attack: Attack) -> None:
    """Envoy resets every ext_proc stream once its filter is done, after the answer: thousands
    of those, as fast as they come, are ordinary traffic."""
    for first in range(1, 2 * 5 * PREMATURE_RESETS.burst, 2 * 500):
        ids = range(first, first + 2 * 500, 2)
        attack.send(
            b"".join(attack.headers(s, ECHO) + DataFrame(s, grpc_frame(b"hi")).serialize() for s in ids)
        )
        await attack.settle()
        assert all(any(isinstance(f, DataFrame) and f.stream_id == s for f in attack.out) for s in ids)
        attack.send(b"".join(RstStreamFrame(s, 8).serialize() for s in ids))
        await attack.settle()
    assert attack.goaway() is None and not attack.transport.closed
    assert attack.started == 5 * PREMATURE_RESETS.burst and attack.connection._streams == {}


async def test_streams_beyond_the_concurrency_limit_are_refused_then_cut() -> None:
    attack = Attack(limits=Limits(max_concurrent_streams=3, premature_resets=Rate(burst=10, per_second=1.0)))
    attack.open()
    try:
        await attack.settle()
        attack.send(b"".join(attack.headers(s) for s in range(1, 2 * 3 + 1, 2)))  # three held open
        await attack.settle()
        assert attack.started == 3
        refused = []
        for stream_id in range(7, 7 + 2 * 20, 2):
            attack.send(attack.headers(stream_id))
            for frame in await attack.settle():
                if isinstance(frame, RstStreamFrame):
                    assert ErrorCodes(frame.error_code) == ErrorCodes.REFUSED_STREAM
                    refused.append(frame.stream_id)
            assert len(attack.connection._streams) <= 3  # never more held than the limit
            if attack.transport.closed:
                break
        assert len(refused) == 10  # the budget: then the connection is cut
        attack.assert_cut(ErrorCodes.ENHANCE_YOUR_CALM)
        assert attack.started == 3
    finally:
        attack.close()


# ---------------------------------------------------------------------------- PING and SETTINGS floods


async def test_a_ping_flood_is_answered_up_to_its_budget_then_cut(attack: Attack) -> None:
    attack.send(b"".join(PingFrame(0, i.to_bytes(8, "big")).serialize() for i in range(10 * PINGS.burst)))
    await attack.settle()
    acks = [f for f in attack.out if isinstance(f, PingFrame)]
    assert len(acks) == PINGS.burst and all("ACK" in f.flags for f in acks)
    attack.assert_cut(ErrorCodes.ENHANCE_YOUR_CALM)


async def test_a_settings_flood_is_acknowledged_up_to_its_budget_then_cut(attack: Attack) -> None:
    before = len([f for f in attack.out if isinstance(f, SettingsFrame) and "ACK" in f.flags])
    attack.send(
        b"".join(
            SettingsFrame(0, settings={4: 1000 + i}).serialize() for i in range(10 * SETTINGS_FRAMES.burst)
        )
    )
    await attack.settle()
    acks = [f for f in attack.out if isinstance(f, SettingsFrame) and "ACK" in f.flags]
    assert len(acks) - before == SETTINGS_FRAMES.burst - 1  # the client's first SETTINGS spent one
    attack.assert_cut(ErrorCodes.ENHANCE_YOUR_CALM)


async def test_one_settings_frame_repeating_a_setting_without_end_is_cut(attack: Attack) -> None:
    """A 1 MiB SETTINGS frame could list 174,762 entries, each new window walking every stream."""
    entries = b"".join(
        (4).to_bytes(2, "big") + v.to_bytes(4, "big") for v in range(MAX_SETTINGS_PER_FRAME + 1)
    )
    attack.send(len(entries).to_bytes(3, "big") + b"\x04\x00\x00\x00\x00\x00" + entries)
    await attack.settle()
    attack.assert_cut(ErrorCodes.ENHANCE_YOUR_CALM)


async def test_the_budgets_refill_with_time() -> None:
    now = [0.0]
    budget = Budget(Rate(burst=3, per_second=2.0), lambda: now[0])
    assert [budget.spend() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one more
    assert [budget.spend(), budget.spend()] == [True, False]
    now[0] += 100  # never more than the burst
    assert [budget.spend() for _ in range(4)] == [True, True, True, False]


# ---------------------------------------------------------------------------- header blocks


async def test_a_continuation_flood_is_cut_at_the_header_block_limit(attack: Attack) -> None:
    """CVE-2024-27316: HEADERS, then CONTINUATION frames that never end the block."""
    attack.send(HeadersFrame(1, b"\x82").serialize())  # no END_HEADERS
    for _ in range(MAX_HEADER_BLOCK // 1024 + 2):
        attack.send(ContinuationFrame(1, b"\x82" * 1024).serialize())
        assert (
            attack.connection._continuation is None
            or len(attack.connection._continuation[2]) <= MAX_HEADER_BLOCK
        )
    await attack.settle()
    attack.assert_cut(ErrorCodes.ENHANCE_YOUR_CALM)


async def test_empty_continuation_frames_run_out_the_budget_too(attack: Attack) -> None:
    """Empty frames would grow nothing: each costs its 9-byte head against the same budget."""
    attack.send(HeadersFrame(1, b"\x82").serialize())
    attack.send(ContinuationFrame(1, b"").serialize() * (MAX_HEADER_BLOCK // 9 + 1))
    await attack.settle()
    attack.assert_cut(ErrorCodes.ENHANCE_YOUR_CALM)


async def test_a_single_headers_frame_over_the_limit_is_cut_before_it_is_decoded(attack: Attack) -> None:
    block = hpack.Encoder().encode(
        [*request_headers(HELD), (b"x-pad", b"a" * MAX_HEADER_BLOCK)], huffman=False
    )
    attack.send(HeadersFrame(1, block, flags=["END_HEADERS"]).serialize())
    await attack.settle()
    attack.assert_cut(ErrorCodes.ENHANCE_YOUR_CALM)
    assert attack.started == 0


async def test_a_header_list_that_decodes_past_the_limit_is_cut(attack: Attack) -> None:
    """An HPACK bomb: one large entry indexed, then a small block naming it over and over."""
    big = (b"x-big", b"b" * 4000)
    first = attack.encoder.encode([*request_headers(HELD), big])
    attack.send(HeadersFrame(1, first, flags=["END_HEADERS"]).serialize())
    await attack.settle()
    assert attack.started == 1  # an ordinary block: served
    # The entry is the newest in the table (it came last): name it first, before anything evicts it.
    second = attack.encoder.encode([*[big] * 100, *request_headers(HELD)])
    assert len(second) < 1000  # 100 one-byte references to the 4 KB entry: 400 KB decoded
    attack.send(HeadersFrame(3, second, flags=["END_HEADERS"]).serialize())
    await attack.settle()
    attack.assert_cut(ErrorCodes.ENHANCE_YOUR_CALM)
    assert attack.started == 1


def test_the_server_says_its_header_list_limit() -> None:
    async def settings() -> dict[int, int]:
        attack = Attack()
        attack.open()
        try:
            (frame, *_) = await attack.settle()
            assert isinstance(frame, SettingsFrame)
            return dict(frame.settings)
        finally:
            attack.close()

    assert asyncio.run(settings())[SettingsFrame.MAX_HEADER_LIST_SIZE] == MAX_HEADER_BLOCK


# ---------------------------------------------------------------------------- flow control


async def test_data_beyond_the_stream_window_is_a_flow_control_error() -> None:
    """A peer ignoring the window it was given would fill the server's memory with messages no
    handler takes (``Held`` reads none)."""
    attack = Attack(max_message=1000)  # stream window 1,005
    attack.open()
    try:
        await attack.settle()
        attack.send(attack.headers(1))
        for _ in range(3):
            attack.send(DataFrame(1, grpc_frame(b"x" * 500)).serialize())
            await attack.settle()
        attack.assert_cut(ErrorCodes.FLOW_CONTROL_ERROR)
    finally:
        attack.close()


async def test_data_beyond_the_connection_window_is_a_flow_control_error() -> None:
    attack = Attack(max_message=70_000)  # stream window 70,005, connection window 4 x that
    attack.open()
    try:
        await attack.settle()
        for stream_id in range(1, 2 * 5, 2):  # five streams, each within its own window
            attack.send(attack.headers(stream_id))
            for _ in range(4):
                attack.send(DataFrame(stream_id, b"\x00" * 17_000).serialize())
            await attack.settle()
        attack.assert_cut(ErrorCodes.FLOW_CONTROL_ERROR)
    finally:
        attack.close()


async def test_before_acknowledging_our_settings_a_peer_may_use_the_default_window() -> None:
    """RFC 9113 §6.9.2: until the peer has our SETTINGS, HTTP/2's initial 65,535 holds, even
    where ours is smaller; once it has acknowledged them, ours does."""
    attack = Attack(max_message=1000)  # stream window 1,005 < 65,535
    attack.open(ack_settings=False)
    try:
        await attack.settle()
        attack.send(attack.headers(1, ECHO) + DataFrame(1, grpc_frame(b"x" * 1000) * 3).serialize())
        await attack.settle()
        assert attack.goaway() is None
        attack.send(SettingsFrame(0, flags=["ACK"]).serialize())
        attack.send(attack.headers(3) + DataFrame(3, grpc_frame(b"x" * 1000) * 2).serialize())
        await attack.settle()
        attack.assert_cut(ErrorCodes.FLOW_CONTROL_ERROR)
    finally:
        attack.close()


# ---------------------------------------------------------------------------- malformed RST_STREAM


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (RstStreamFrame(1, 8).serialize(), ErrorCodes.PROTOCOL_ERROR),  # a stream never opened
        (b"\x00\x00\x04\x03\x00\x00\x00\x00\x00" + b"\x00" * 4, ErrorCodes.PROTOCOL_ERROR),  # stream 0
        (b"\x00\x00\x03\x03\x00\x00\x00\x00\x01" + b"\x00" * 3, ErrorCodes.FRAME_SIZE_ERROR),
    ],
    ids=["idle-stream", "stream-0", "short"],
)
async def test_malformed_rst_stream_is_a_connection_error(
    attack: Attack, frame: bytes, code: ErrorCodes
) -> None:
    attack.send(frame)
    await attack.settle()
    attack.assert_cut(code)


# ---------------------------------------------------------------------------- declared lengths


async def test_declared_lengths_reserve_no_more_than_the_connection_window() -> None:
    """A large message's buffer is made at its full size as soon as its 5-byte head arrives: a peer
    declaring the largest message on many streams, then sending nothing more, must not make the
    server allocate (and zero) that size on each. What the server holds stays within the windows
    it gave the peer (limits.py: bounded by these numbers, not by what a peer sends)."""
    max_message = 1 << 20
    attack = Attack(max_message=max_message)  # stream window ~1 MiB, connection window ~4 MiB
    attack.open()
    try:
        await attack.settle()
        head = (max_message).to_bytes(5, "big")  # uncompressed, length max_message
        streams = 64
        for stream_id in range(1, 2 * streams, 2):
            attack.send(attack.headers(stream_id) + DataFrame(stream_id, head + b"x" * 100).serialize())
        await attack.settle()
        assert attack.goaway() is None  # within every window: nothing to cut
        held = sum(len(s.buffer) for s in attack.connection._streams.values())
        window = attack.connection._connection_window
        assert len(attack.connection._streams) == streams
        assert held <= 2 * window, f"{held} bytes allocated for {streams * 105} received"
        # Reset, the streams give their reservations back: the next large message is made whole again.
        for stream_id in range(1, 2 * streams, 2):
            attack.send(RstStreamFrame(stream_id, error_code=8).serialize())
        await attack.settle()
        assert attack.connection._reserved == 0
    finally:
        attack.close()
