"""ext_proc's request log lines: ids and outcomes only, failures always, successes sampled,
written off the event loop in batches."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from infery_proto.v1 import usage_pb2

from ext_proc import request_log
from ext_proc.request_log import RequestLog


def _record(status: int, request_id: str = "r1") -> usage_pb2.UsageRecord:
    return usage_pb2.UsageRecord(
        request_id=request_id, workspace_id="ws", key_id="key-id", member_id="member-id", status=status
    )


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    path = tmp_path / "requests.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    yield fd, path
    os.close(fd)


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_line_holds_the_fields_and_no_key_or_member(log_file: tuple[int, Path]) -> None:
    fd, path = log_file
    kept: list[usage_pb2.UsageRecord] = []
    log = RequestLog(fd, sample=1.0)
    log.recorder(kept.append)(_record(200))
    log.close()
    (line,) = _lines(path)
    assert line["request_id"] == "r1" and line["workspace_id"] == "ws" and line["status"] == 200
    assert (line["level"], line["logger"], line["message"]) == ("INFO", "infery.requests", "request")
    assert set(line) == {"time", "level", "logger", "message", *request_log.FIELDS}
    assert "key-id" not in path.read_text() and "member-id" not in path.read_text() and len(kept) == 1


def test_failures_are_logged_even_when_successes_are_not(log_file: tuple[int, Path]) -> None:
    fd, path = log_file
    log = RequestLog(fd, sample=0.0)
    record = log.recorder(lambda rec: None)
    record(_record(200))
    record(_record(502))
    log.close()
    assert [line["status"] for line in _lines(path)] == [502]


async def test_lines_are_batched_and_written_within_the_flush_interval(log_file: tuple[int, Path]) -> None:
    fd, path = log_file
    log = RequestLog(fd, sample=1.0, flush_interval_s=0.05)
    record = log.recorder(lambda rec: None)
    for i in range(3):
        record(_record(200, f"r{i}"))
    assert path.read_text() == ""  # nothing written on the loop's turn
    for _ in range(100):
        await asyncio.sleep(0.02)
        if path.read_text().count("\n") == 3:
            break
    assert [line["request_id"] for line in _lines(path)] == ["r0", "r1", "r2"]
    log.close()


def test_a_closed_stream_loses_lines_not_the_process() -> None:
    read, write = os.pipe()
    os.close(read)  # every write now fails with EPIPE
    log = RequestLog(write, sample=1.0)
    log.recorder(lambda rec: None)(_record(500))
    log.close()
    os.close(write)
    assert log.dropped_batches == 1
