"""UsageReporter against a real gRPC UsageService that comes and goes.

The servicer here dedupes by request_id like the control plane does, and
remembers every id it was sent (``seen``) so duplicates and losses both show.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from infery_proto.v1 import usage_pb2, usage_pb2_grpc

from ext_proc.usage_spool import UsageReporter, _Spool


class Collector(usage_pb2_grpc.UsageServiceServicer):
    """Records batches; can drop the ack of some calls or hang on them."""

    def __init__(self, *, lose_acks: int = 0, hang_calls: int = 0) -> None:
        self.seen: collections.Counter[str] = collections.Counter()
        self.stored: set[str] = set()
        self.batches: list[list[str]] = []
        self._lose_acks = lose_acks
        self._hang_calls = hang_calls

    async def Report(
        self, request: usage_pb2.UsageBatch, context: grpc.aio.ServicerContext
    ) -> usage_pb2.UsageAck:
        if self._hang_calls:
            self._hang_calls -= 1
            await asyncio.sleep(60)  # cancelled by the client deadline / server stop
        ids = [r.request_id for r in request.records]
        self.batches.append(ids)
        self.seen.update(ids)
        new = set(ids) - self.stored
        self.stored |= new
        if self._lose_acks:
            # Stored, but the client never hears so: it must resend.
            self._lose_acks -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "ack lost")
        return usage_pb2.UsageAck(stored=len(new), duplicates=len(ids) - len(new))


class ControlPlane:
    """A UsageService on a fixed port that a test can stop and start again."""

    def __init__(self, collector: Collector, port: int | None = None) -> None:
        self.collector = collector
        self.port = port if port is not None else free_port()
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server()
        usage_pb2_grpc.add_UsageServiceServicer_to_server(self.collector, server)
        assert server.add_insecure_port(self.target) == self.port
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)  # abrupt: in-flight calls are cut
            self._server = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make(prefix: str, i: int) -> usage_pb2.UsageRecord:
    return usage_pb2.UsageRecord(
        request_id=f"{prefix}-{i}",
        started_at_ms=1_700_000_000_000 + i,
        workspace_id="ws",
        key_id="k1",
        endpoint="/v1/chat/completions",
        model_requested="gpt-4o-mini",
        model_used="gpt-4o-mini",
        provider="openai",
        status=200,
        input_tokens=12,
        output_tokens=34,
        credits="0.000123",
        latency_ms=5.5,
    )


def fast_reporter(
    target: str, path: Path, *, batch_size: int = 200, timeout_s: float = 0.5, direct: bool = False
) -> UsageReporter:
    """Test-speed timings; the logic under test is the same as with the defaults.

    Direct delivery (memory → control plane, skipping the disk) is off unless asked
    for: these tests exercise the spool itself.
    """
    return UsageReporter(
        target,
        str(path),
        batch_size=batch_size,
        flush_interval_s=0.01,
        retry_backoff_s=(0.02, 0.2),
        report_timeout_s=timeout_s,
        direct_delivery=direct,
    )


def spool_rows(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT request_id FROM spool ORDER BY seq")]


async def eventually(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_records_are_delivered_and_leave_the_spool(tmp_path: Path) -> None:
    cp = ControlPlane(Collector())
    await cp.start()
    reporter = fast_reporter(cp.target, tmp_path / "spool.db", batch_size=50)
    try:
        await reporter.start()
        ids = {f"a-{i}" for i in range(500)}
        for i in range(500):
            reporter.record(make("a", i))
        assert reporter.pending() == 500
        await eventually(lambda: reporter.pending() == 0)
        assert set(cp.collector.seen) == ids
        assert reporter.stats.delivered >= 500
        assert max(len(b) for b in cp.collector.batches) <= 50
    finally:
        await reporter.close()
        await cp.stop()
    assert spool_rows(tmp_path / "spool.db") == []


async def test_server_down_at_start_then_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ext_proc.usage_spool")
    cp = ControlPlane(Collector())  # not started yet
    path = tmp_path / "spool.db"
    reporter = fast_reporter(cp.target, path, batch_size=100, timeout_s=0.2)
    try:
        await reporter.start()
        for i in range(300):
            reporter.record(make("b", i))
        await eventually(lambda: reporter.stats.failed_attempts >= 3)
        assert reporter.pending() == 300
        assert len(spool_rows(path)) == 300  # durable before any delivery
        await cp.start()
        await eventually(lambda: reporter.pending() == 0)
        assert set(cp.collector.seen) == {f"b-{i}" for i in range(300)}
    finally:
        await reporter.close()
        await cp.stop()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "one warning per outage, not per attempt"
    assert any("recovered" in r.getMessage() for r in caplog.records)
    assert not any("b-1" in r.getMessage() for r in caplog.records)


async def test_server_killed_midway_loses_nothing(tmp_path: Path) -> None:
    cp = ControlPlane(Collector())
    await cp.start()
    reporter = fast_reporter(cp.target, tmp_path / "spool.db", batch_size=40)
    total = 3000

    async def produce() -> None:
        for i in range(total):
            reporter.record(make("c", i))
            if i % 50 == 0:
                await asyncio.sleep(0.003)

    try:
        await reporter.start()
        producer = asyncio.create_task(produce())
        await eventually(lambda: len(cp.collector.seen) >= 300)
        await cp.stop()
        failed = reporter.stats.failed_attempts
        await eventually(lambda: reporter.stats.failed_attempts > failed + 1)
        await cp.start()  # same port, same collector: the union is what the control plane holds
        await producer
        await eventually(lambda: reporter.pending() == 0)
        missing = {f"c-{i}" for i in range(total)} - set(cp.collector.seen)
        assert not missing
        assert reporter.stats.delivered >= total
    finally:
        await reporter.close()
        await cp.stop()


async def test_closed_while_down_next_reporter_delivers_leftovers_first(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    cp = ControlPlane(Collector())
    first = fast_reporter(cp.target, path, batch_size=100)
    await first.start()
    for i in range(250):
        first.record(make("old", i))
    await first.close(timeout_s=0)  # nothing listening, no time given: still must not lose the queue
    assert len(spool_rows(path)) == 250
    with pytest.raises(RuntimeError):
        first.record(make("late", 0))

    second = fast_reporter(cp.target, path, batch_size=100, timeout_s=0.1)
    try:
        await second.start()
        assert second.pending() == 250
        for i in range(10):
            second.record(make("new", i))
        await eventually(lambda: len(spool_rows(path)) == 260)
        # The next read happens after the new rows are spooled: still the old go first.
        failed = second.stats.failed_attempts
        await eventually(lambda: second.stats.failed_attempts > failed)
        await cp.start()
        await eventually(lambda: second.pending() == 0)
    finally:
        await second.close()
        await cp.stop()
    seen = set(cp.collector.seen)
    assert {f"old-{i}" for i in range(250)} <= seen
    assert {f"new-{i}" for i in range(10)} <= seen
    assert all(rid.startswith("old-") for rid in cp.collector.batches[0])
    assert spool_rows(path) == []


async def test_lost_acks_cause_duplicates_never_gaps(tmp_path: Path) -> None:
    cp = ControlPlane(Collector(lose_acks=2))
    await cp.start()
    reporter = fast_reporter(cp.target, tmp_path / "spool.db", batch_size=30)
    try:
        await reporter.start()
        for i in range(100):
            reporter.record(make("d", i))
        reporter.record(make("d", 7))  # the gateway may report one request twice too
        await eventually(lambda: reporter.pending() == 0)
    finally:
        await reporter.close()
        await cp.stop()
    seen = cp.collector.seen
    assert set(seen) == {f"d-{i}" for i in range(100)}
    assert max(seen.values()) >= 2, "the unacked batch was resent"
    assert cp.collector.stored == set(seen)
    assert reporter.stats.failed_attempts == 2


async def test_spool_write_failure_keeps_records_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_append = _Spool.append
    failures = 3

    def flaky_append(spool: _Spool, rows: list[tuple[str, bytes]]) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise sqlite3.OperationalError("disk I/O error")
        real_append(spool, rows)

    monkeypatch.setattr(_Spool, "append", flaky_append)
    cp = ControlPlane(Collector())
    await cp.start()
    reporter = fast_reporter(cp.target, tmp_path / "spool.db")
    try:
        await reporter.start()
        for i in range(120):
            reporter.record(make("w", i))
        await eventually(lambda: reporter.pending() == 0)
    finally:
        await reporter.close()
        await cp.stop()
    assert failures == 0
    assert set(cp.collector.seen) == {f"w-{i}" for i in range(120)}
    assert sum("write failing" in r.getMessage() for r in caplog.records) == 1


async def test_hung_control_plane_times_out_and_retries(tmp_path: Path) -> None:
    cp = ControlPlane(Collector(hang_calls=1))
    await cp.start()
    reporter = fast_reporter(cp.target, tmp_path / "spool.db", timeout_s=0.2)
    try:
        await reporter.start()
        for i in range(20):
            reporter.record(make("e", i))
        await eventually(lambda: reporter.pending() == 0)
        assert set(cp.collector.seen) == {f"e-{i}" for i in range(20)}
        assert reporter.stats.failed_attempts >= 1
    finally:
        await reporter.close()
        await cp.stop()


async def test_undecodable_spool_row_is_dropped_not_wedging(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    cp = ControlPlane(Collector())
    first = fast_reporter(cp.target, path)
    await first.start()  # creates the schema
    await first.close(timeout_s=0)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO spool (request_id, record) VALUES ('bad', x'ffffffff')")
        conn.execute(
            "INSERT INTO spool (request_id, record) VALUES (?, ?)", ("f-0", make("f", 0).SerializeToString())
        )
    await cp.start()
    reporter = fast_reporter(cp.target, path)
    try:
        await reporter.start()
        await eventually(lambda: reporter.pending() == 0)
    finally:
        await reporter.close()
        await cp.stop()
    assert set(cp.collector.seen) == {"f-0"}
    assert spool_rows(path) == []


async def test_record_is_cheap_for_10k_records(tmp_path: Path) -> None:
    cp = ControlPlane(Collector())
    await cp.start()
    reporter = UsageReporter(cp.target, str(tmp_path / "spool.db"))  # production defaults
    recs = [make("g", i) for i in range(10_000)]
    try:
        await reporter.start()
        t0 = time.perf_counter()
        for rec in recs:
            reporter.record(rec)
        elapsed = time.perf_counter() - t0
        t1 = time.perf_counter()
        await eventually(lambda: reporter.pending() == 0, timeout=30)
        drained = time.perf_counter() - t1
    finally:
        await reporter.close()
        await cp.stop()
    print(f"\nrecord(): {elapsed / len(recs) * 1e6:.2f} µs/record; 10k spooled+delivered in {drained:.2f}s")
    assert set(cp.collector.seen) == {f"g-{i}" for i in range(10_000)}


class BlackHoleProxy:
    """TCP forwarder whose open connections can go silent without closing,
    like a control-plane host that vanished without sending a RST."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream.rsplit(":", 1)
        self._silenced: set[int] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def silence_open_connections(self) -> None:
        self._silenced.update(id(w) for w in self._writers)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self._upstream
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                if id(writer) not in self._silenced:
                    dst.write(data)
                    await dst.drain()
            dst.close()

        pipes = [asyncio.create_task(pipe(reader, up_writer)), asyncio.create_task(pipe(up_reader, writer))]
        self._tasks.update(pipes)
        await asyncio.gather(*pipes, return_exceptions=True)


async def test_silently_dead_connection_is_replaced(tmp_path: Path) -> None:
    cp = ControlPlane(Collector())
    await cp.start()
    proxy = BlackHoleProxy(cp.target)
    await proxy.start()
    reporter = fast_reporter(f"127.0.0.1:{proxy.port}", tmp_path / "spool.db", timeout_s=0.2)
    try:
        await reporter.start()
        reporter.record(make("h", 0))
        await eventually(lambda: reporter.pending() == 0)
        proxy.silence_open_connections()  # the established connection now eats every byte
        for i in range(1, 50):
            reporter.record(make("h", i))
        await eventually(lambda: reporter.pending() == 0)
        assert set(cp.collector.seen) == {f"h-{i}" for i in range(50)}
        assert reporter.stats.failed_attempts >= 1
    finally:
        await reporter.close()
        await proxy.stop()
        await cp.stop()


async def test_direct_delivery_skips_the_disk_until_a_failure(tmp_path: Path) -> None:
    cp = ControlPlane(Collector())
    await cp.start()
    reporter = fast_reporter(cp.target, tmp_path / "spool.db", batch_size=50, direct=True)
    try:
        await reporter.start()
        for i in range(300):
            reporter.record(make("d", i))
        await eventually(lambda: reporter.pending() == 0)
        assert reporter.stats.spooled == 0  # the happy path never touched the spool
        assert max(len(b) for b in cp.collector.batches) <= 50
        await cp.stop()
        for i in range(100):
            reporter.record(make("e", i))
        await eventually(lambda: reporter.stats.spooled > 0)  # control plane down: durable again
        await cp.start()
        await eventually(lambda: reporter.pending() == 0)
    finally:
        await reporter.close()
        await cp.stop()
    assert {f"d-{i}" for i in range(300)} | {f"e-{i}" for i in range(100)} <= set(cp.collector.seen)
