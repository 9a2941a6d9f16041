"""Claiming a batch's lines: never past the limit, never one line to two workers, leases that
end, and results written only by the line's owner; on SQLite and on PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest
from sqlmodel import Session

from control_plane.batches import lines
from control_plane.store import db
from control_plane.store.tables import Batch
from tests.postgres import fresh_database

LEASE_MS = 60_000


@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[db.SessionFactory]:
    with contextlib.ExitStack() as stack:
        url = sqlite_url
        if request.param == "postgresql":
            url = stack.enter_context(fresh_database())
            db.migrate(url)
        engine = db.create_engine(url)
        stack.callback(engine.dispose)
        yield db.session_factory(engine)


def a_batch(session: Session, batch_id: str, count: int) -> None:
    now = int(time.time())
    session.add(
        Batch(id=batch_id, workspace_id="w", endpoint="/v1/embeddings", input_file_id="f", created_at=now,
              expires_at=now + 3600, status="in_progress", total=count)
    )  # fmt: skip
    session.commit()
    lines.insert_lines(session, batch_id, (lines.NewLine(i, f"c{i}", b"{}") for i in range(1, count + 1)))
    session.commit()


def test_a_claim_takes_at_most_its_limit_in_line_order(sessions: db.SessionFactory):
    with sessions() as session:
        a_batch(session, "b", 30)
        now = int(time.time() * 1000)
        first = lines.claim(session, "b", "w1", 8, now, LEASE_MS)
        second = lines.claim(session, "b", "w2", 8, now, LEASE_MS)
    assert [c.line_no for c in first] == list(range(1, 9))
    assert [c.line_no for c in second] == list(range(9, 17))
    assert all(c.attempts == 1 for c in first + second)


def test_concurrent_claimers_never_take_the_same_line(sessions: db.SessionFactory):
    with sessions() as session:
        a_batch(session, "b", 300)
    taken: dict[str, list[int]] = {"w1": [], "w2": [], "w3": []}

    def claim_all(owner: str) -> None:
        while True:
            with sessions() as session:
                got = lines.claim(session, "b", owner, 7, int(time.time() * 1000), LEASE_MS)
            if not got:
                return
            taken[owner] += [c.line_no for c in got]

    threads = [threading.Thread(target=claim_all, args=(owner,)) for owner in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    every = [n for got in taken.values() for n in got]
    assert sorted(every) == list(range(1, 301))  # each line once
    assert all(taken.values()), {owner: len(got) for owner, got in taken.items()}


def test_a_lapsed_lease_is_claimed_again_and_only_its_new_owner_may_finish_it(sessions: db.SessionFactory):
    with sessions() as session:
        a_batch(session, "b", 1)
        now = int(time.time() * 1000)
        (line,) = lines.claim(session, "b", "dead", 5, now, 1000)
        assert lines.claim(session, "b", "live", 5, now + 500, 1000) == []  # still the dead worker's
        (again,) = lines.claim(session, "b", "live", 5, now + 1001, 1000)
        assert again.id == line.id and again.attempts == 2
        args = {"status_code": 200, "request_id": "r", "response": b"{}", "credits_pico": 5, "now_ms": now}
        assert not lines.finish(session, line.id, "dead", **args)  # taken over: its answer is not written
        assert lines.finish(session, line.id, "live", **args)
        tally = lines.tally(session, "b", now)
    assert (tally.completed, tally.failed, tally.unfinished) == (1, 0, 0)


def test_a_line_given_back_waits_for_its_time(sessions: db.SessionFactory):
    with sessions() as session:
        a_batch(session, "b", 1)
        now = int(time.time() * 1000)
        (line,) = lines.claim(session, "b", "w", 1, now, LEASE_MS)
        lines.retry_later(session, line.id, "w", now + 5000)
        assert lines.claim(session, "b", "w", 1, now + 4999, LEASE_MS) == []
        assert [c.id for c in lines.claim(session, "b", "w", 1, now + 5000, LEASE_MS)] == [line.id]


def test_failed_lines_are_never_claimed_and_count_as_failed(sessions: db.SessionFactory):
    with sessions() as session:
        now = int(time.time())
        session.add(
            Batch(id="b", workspace_id="w", endpoint="/v1/embeddings", input_file_id="f", created_at=now,
                  expires_at=now + 3600, status="in_progress", total=2)
        )  # fmt: skip
        session.commit()
        refused = {"code": "model_not_allowed", "message": "no"}
        lines.insert_lines(
            session, "b", [lines.NewLine(1, "a", b"{}", refused), lines.NewLine(2, "b", b"{}")]
        )
        session.commit()
        claimed = lines.claim(session, "b", "w", 5, now * 1000, LEASE_MS)
        tally = lines.tally(session, "b", now * 1000)
    assert [c.custom_id for c in claimed] == ["b"]
    assert (tally.failed, tally.unfinished, tally.in_flight) == (1, 1, 1)


def test_a_seal_takes_every_unfinished_line_no_live_worker_holds_and_nothing_is_claimed_after(
    sessions: db.SessionFactory,
):
    with sessions() as session:
        a_batch(session, "b", 6)
        now = int(time.time() * 1000)
        live = lines.claim(session, "b", "live", 2, now, LEASE_MS)  # lines 1-2: in flight
        dead = lines.claim(session, "b", "dead", 2, now - LEASE_MS - 1, LEASE_MS)  # 3-4: lapsed
        assert [c.line_no for c in live + dead] == [1, 2, 3, 4]
        assert lines.seal(session, "b", "finalizer", now, LEASE_MS) == 4  # 3-4, and pending 5-6
        assert lines.held_elsewhere(session, "b", "finalizer", now) == 2
        assert lines.claim(session, "b", "late", 10, now + 1, LEASE_MS) == []  # nothing left to start
        assert not lines.finish(
            session, dead[0].id, "dead", status_code=200, request_id="r", response=b"{}",
            credits_pico=1, now_ms=now,
        )  # fmt: skip
        # The live worker's lines finish as usual; then a seal again leaves no one else holding any.
        for line in live:
            lines.finish(
                session, line.id, "live", status_code=200, request_id="r", response=b"{}",
                credits_pico=1, now_ms=now,
            )  # fmt: skip
        assert lines.seal(session, "b", "finalizer", now, LEASE_MS) == 4  # its own, renewed
        assert lines.held_elsewhere(session, "b", "finalizer", now) == 0
        # What a worker may have sent: the lines ever claimed, not those never sent.
        assert [c.line_no for c in lines.to_recover(session, "b", "finalizer")] == [3, 4]


def test_sweeping_deletes_a_batchs_lines_a_chunk_at_a_time(sessions: db.SessionFactory):
    with sessions() as session:
        a_batch(session, "old", 25)
        a_batch(session, "other", 3)
        assert [lines.sweep_some(session, "old", 10) for _ in range(4)] == [10, 10, 5, 0]
        assert lines.tally(session, "old", 0) == lines.Tally()
        assert lines.tally(session, "other", 0).unfinished == 3
