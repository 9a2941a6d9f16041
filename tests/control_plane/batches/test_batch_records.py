"""The batch object: OpenAI's shape, with ``usage`` and ``credits_used`` summed from the usage
records of its lines, and counts that outlive its lines."""

from __future__ import annotations

import time

from openai.types import Batch as SdkBatch

from control_plane.batches import lines, records
from control_plane.store import db
from control_plane.store.tables import Batch, UsageRecord


def record(request_id: str, batch_id: str, pico: int, **tokens: int) -> UsageRecord:
    return UsageRecord(
        request_id=request_id, started_at_ms=0, day="2026-01-01", workspace_id="w", batch_id=batch_id,
        custom_id=request_id, credits=str(pico), credits_pico=pico, **tokens,
    )  # fmt: skip


def test_credits_and_usage_are_the_sums_of_the_lines_usage_records(session_factory: db.SessionFactory):
    now = int(time.time())
    with session_factory() as session:
        session.add(Batch(id="b", workspace_id="w", endpoint="/v1/chat/completions", input_file_id="f",
                          created_at=now, expires_at=now + 60, status="in_progress", total=3))  # fmt: skip
        session.add_all(
            [
                record("r1", "b", 1_500_000, input_tokens=100, cached_input_tokens=40, output_tokens=20),
                record("r2", "b", 2_000_000, input_tokens=50, output_tokens=30, reasoning_tokens=10),
                record("r3", "b", 0),  # a replay, or a recovery probe: at no charge
                record("r4", "another", 9_000_000, input_tokens=7),
                record("r5", "", 9_000_000, input_tokens=7),  # a live request
            ]
        )
        session.commit()
        row = records.get(session, "b")
        assert row is not None
        doc = records.describe(session, row, now * 1000)
    assert doc["credits_used"] == "0.0000035"
    assert doc["usage"] == {
        "input_tokens": 150,
        "input_tokens_details": {"cached_tokens": 40},
        "output_tokens": 50,
        "output_tokens_details": {"reasoning_tokens": 10},
        "total_tokens": 200,
    }
    parsed = SdkBatch.model_validate(doc)  # the openai SDK's own type reads it
    assert parsed.usage is not None and parsed.usage.output_tokens_details.reasoning_tokens == 10


def test_an_ended_batch_keeps_its_counts_when_its_lines_are_gone(session_factory: db.SessionFactory):
    now = int(time.time())
    with session_factory() as session:
        session.add(Batch(id="b", workspace_id="w", endpoint="/v1/embeddings", input_file_id="f",
                          created_at=now, expires_at=now + 60, status="cancelled", total=5,
                          completed_lines=2, failed_lines=3, ended_at=now))  # fmt: skip
        session.commit()
        row = records.get(session, "b")
        assert row is not None and lines.tally(session, "b", 0) == lines.Tally()
        doc = records.describe(session, row, now * 1000)
    assert doc["request_counts"] == {"total": 5, "completed": 2, "failed": 3}
    assert doc["credits_used"] == "0" and doc["usage"]["total_tokens"] == 0


def test_a_running_batch_counts_from_its_lines(session_factory: db.SessionFactory):
    now = int(time.time())
    with session_factory() as session:
        session.add(Batch(id="b", workspace_id="w", endpoint="/v1/embeddings", input_file_id="f",
                          created_at=now, expires_at=now + 60, status="cancelling", total=2))  # fmt: skip
        session.commit()
        lines.insert_lines(session, "b", [lines.NewLine(1, "a", b"{}"), lines.NewLine(2, "b", b"{}")])
        session.commit()
        (line,) = lines.claim(session, "b", "w", 1, now * 1000, 60_000)
        lines.finish(session, line.id, "w", status_code=200, request_id="r", response=b"{}",
                     credits_pico=0, now_ms=now * 1000)  # fmt: skip
        row = records.get(session, "b")
        assert row is not None
        doc = records.describe(session, row, now * 1000)
    # Cancelling: the line not sent is not failed yet (it is once the batch is cancelled).
    assert doc["request_counts"] == {"total": 2, "completed": 1, "failed": 0}
