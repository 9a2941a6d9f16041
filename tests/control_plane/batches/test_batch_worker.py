"""The batch worker's steps that need no listener, on a real store and a real files storage:
finalizing again after a finalizer died (same files, no orphan, no duplicate), and the sweep
that deletes the lines of batches ended longer ago than the retention."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from sqlmodel import col, select

from control_plane.batches import lines, output, records
from control_plane.batches.settings import BatchSettings
from control_plane.batches.worker import DAY_S, Worker
from control_plane.files.storage import FileStorage
from control_plane.store import db
from control_plane.store.tables import Batch, StoredFile, UsageRecord

NOW = 1_800_000_000.0


@pytest.fixture
async def worker(
    sqlite_url: str, session_factory: db.SessionFactory, tmp_path: Path
) -> AsyncIterator[Worker]:
    settings = BatchSettings(database_url=sqlite_url, files_url=(tmp_path / "files").as_uri())
    async with httpx.AsyncClient() as client:  # never used: nothing here goes to a listener
        yield Worker(settings, session_factory, FileStorage(settings.storage_url), b"k" * 32, client,
                     clock=lambda: NOW)  # fmt: skip


def answered_batch(sessions: db.SessionFactory, batch_id: str, statuses: list[int]) -> Batch:
    """An in-progress batch whose lines have all been answered with ``statuses`` (their usage
    records in the store, as ext_proc delivers them)."""
    row = Batch(id=batch_id, workspace_id="w", endpoint="/v1/embeddings", input_file_id="f",
                created_at=int(NOW), expires_at=int(NOW) + 3600, status="in_progress",
                total=len(statuses))  # fmt: skip
    with sessions() as session:
        session.add(row)
        session.commit()
        lines.insert_lines(
            session, batch_id, [lines.NewLine(i, f"c{i}", b"{}") for i in range(1, len(statuses) + 1)]
        )
        session.commit()
        claimed = lines.claim(session, batch_id, "w0", len(statuses), int(NOW * 1000), 60_000)
        for line, status in zip(claimed, statuses, strict=True):
            body = orjson.dumps(
                {"object": "list"} if status == 200 else {"error": {"code": "x", "message": "m"}}
            )
            lines.finish(session, line.id, "w0", status_code=status, request_id=f"r{line.line_no}",
                         response=body, credits_pico=0, now_ms=int(NOW * 1000))  # fmt: skip
            session.add(UsageRecord(request_id=f"r{line.line_no}", started_at_ms=0, day="2027-01-15",
                                    batch_id=batch_id, custom_id=line.custom_id, status=status))  # fmt: skip
        session.commit()
        found = records.get(session, batch_id)
        assert found is not None
        return found


def batch_files(sessions: db.SessionFactory) -> list[StoredFile]:
    with sessions() as session:
        return list(session.exec(select(StoredFile).where(col(StoredFile.purpose) == output.OUTPUT_PURPOSE)))


async def test_a_finalizer_taking_over_from_a_dead_one_writes_the_same_files_and_leaves_no_orphan(
    worker: Worker, session_factory: db.SessionFactory, tmp_path: Path
):
    batch = answered_batch(session_factory, "b", [200, 200, 500])
    # The first finalizer: took the batch, chose the files' ids, wrote both files, and died
    # before it could end the batch (its lease runs out).
    with session_factory() as session:
        assert records.take(session, "b", "in_progress", "dead", int(NOW * 1000), 1)
        output_id, error_id = output.reserve(NOW)
        assert records.move(session, "b", "dead", "in_progress", status="finalizing", finalizing_at=int(NOW),
                            output_file_id=output_id, error_file_id=error_id)  # fmt: skip
        dying = records.get(session, "b")
        assert dying is not None
    assert await output.write_files(session_factory, worker.storage, dying, "completed", worker.clock) == (
        output_id,
        error_id,
    )
    assert len(batch_files(session_factory)) == 2
    # The next finalizer takes over and finishes: the same two files, written again.
    with session_factory() as session:
        assert records.take(session, "b", "finalizing", worker.owner, int(NOW * 1000) + 2, 60_000)
        batch = records.get(session, "b")
        assert batch is not None
    await worker.finalize(batch, "finalizing", "completed")
    with session_factory() as session:
        ended = records.get(session, "b")
        assert ended is not None
        doc = records.describe(session, ended, int(NOW * 1000))
    assert (ended.status, ended.output_file_id, ended.error_file_id) == ("completed", output_id, error_id)
    assert doc["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    files = {row.id: row for row in batch_files(session_factory)}
    assert set(files) == {output_id, error_id}  # no orphan, no duplicate
    assert all(row.status == "processed" for row in files.values())
    content = b"".join([piece async for piece in await worker.storage.read(files[output_id].storage_key)])
    assert [orjson.loads(line)["custom_id"] for line in content.splitlines()] == ["c1", "c2"]
    assert files[output_id].bytes == len(content)


async def test_a_file_an_earlier_attempt_made_that_is_not_needed_is_removed(
    worker: Worker, session_factory: db.SessionFactory
):
    batch = answered_batch(session_factory, "b", [200])
    with session_factory() as session:
        assert records.take(session, "b", "in_progress", worker.owner, int(NOW * 1000), 60_000)
    # An earlier attempt wrote an error file under the reserved id (say a line it saw as failed).
    output_id, error_id = output.reserve(NOW)
    batch.output_file_id, batch.error_file_id = output_id, error_id
    await output.write_files(session_factory, worker.storage, batch, "completed", worker.clock)
    with session_factory() as session:
        assert records.move(session, "b", worker.owner, "in_progress", output_file_id=output_id,
                            error_file_id=error_id)  # fmt: skip
        stale = StoredFile(id=error_id, workspace_id="w", created_at=int(NOW), storage_key=f"w/{error_id}",
                           purpose=output.OUTPUT_PURPOSE, status="processed")  # fmt: skip
        session.add(stale)
        session.commit()
        batch = records.get(session, "b")
        assert batch is not None
    async with worker.storage.writer(f"w/{error_id}") as writer:
        await writer.write(b'{"custom_id": "c1"}\n')
    await worker.finalize(batch, "in_progress", "completed")
    with session_factory() as session:
        ended = records.get(session, "b")
        assert ended is not None
    assert (ended.output_file_id, ended.error_file_id) == (output_id, None)
    assert [row.id for row in batch_files(session_factory)] == [output_id]
    with pytest.raises(LookupError):
        await worker.storage.read(f"w/{error_id}")


def ended_batch(sessions: db.SessionFactory, batch_id: str, ended_at: float | None, count: int,
                status: str = "completed") -> None:  # fmt: skip
    with sessions() as session:
        session.add(Batch(id=batch_id, workspace_id="w", endpoint="/v1/embeddings", input_file_id="f",
                          created_at=0, expires_at=0, status=status, total=count, completed_lines=count,
                          ended_at=None if ended_at is None else int(ended_at)))  # fmt: skip
        session.commit()
        lines.insert_lines(session, batch_id, [lines.NewLine(i, f"c{i}", b"{}") for i in range(1, count + 1)])
        session.commit()


def kept(sessions: db.SessionFactory, batch_id: str) -> int:
    with sessions() as session:
        return len(lines.results(session, batch_id, 0, 1_000_000))


async def test_the_sweep_deletes_the_lines_of_batches_ended_before_the_retention_only(
    worker: Worker, session_factory: db.SessionFactory, monkeypatch: pytest.MonkeyPatch
):
    retention = worker.settings.batch_lines_retention_days * DAY_S
    ended_batch(session_factory, "old", NOW - retention - 1, 2_500)
    ended_batch(session_factory, "older", NOW - retention - 100, 3)
    ended_batch(session_factory, "recent", NOW - retention + 60, 4)
    ended_batch(session_factory, "running", None, 5, status="in_progress")
    monkeypatch.setattr("control_plane.batches.worker.SWEEP_LINES", 2_000)  # a pass's bound
    assert worker.sweep() == 2_000  # bounded: the oldest first, the rest at the next pass
    assert (kept(session_factory, "older"), kept(session_factory, "old")) == (0, 503)
    assert worker.sweep() == 503
    assert worker.sweep() == 0
    assert [kept(session_factory, b) for b in ("old", "older", "recent", "running")] == [0, 0, 4, 5]
    with session_factory() as session:
        rows = {row.id: row for row in session.exec(select(Batch))}
        doc = records.describe(session, rows["old"], int(NOW * 1000))
    assert rows["old"].lines_swept and rows["older"].lines_swept and not rows["recent"].lines_swept
    assert doc["request_counts"] == {"total": 2_500, "completed": 2_500, "failed": 0}  # the batch stays
    swept = worker.metrics.registry.get_sample_value("infery_batch_lines_swept_total")
    assert swept == 2_503
