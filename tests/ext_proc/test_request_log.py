"""ext_proc's request log lines: ids and outcomes only, failures always, successes sampled."""

from __future__ import annotations

import logging

import pytest
from infery_proto.v1 import usage_pb2

from ext_proc import request_log


def _record(status: int) -> usage_pb2.UsageRecord:
    return usage_pb2.UsageRecord(
        request_id="r1", workspace_id="ws", key_id="key-id", member_id="member-id", status=status
    )


def test_a_line_holds_no_key_or_member(caplog: pytest.LogCaptureFixture) -> None:
    kept: list[usage_pb2.UsageRecord] = []
    with caplog.at_level(logging.INFO, logger="infery.requests"):
        request_log.recorder(kept.append, 1.0)(_record(200))
    (line,) = caplog.records
    assert line.request_id == "r1" and line.workspace_id == "ws"  # type: ignore[attr-defined]
    assert not {"key_id", "member_id"} & set(vars(line)) and len(kept) == 1


def test_failures_are_logged_even_when_successes_are_not(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="infery.requests"):
        record = request_log.recorder(lambda rec: None, 0.0)
        record(_record(200))
        record(_record(502))
    assert [r.status for r in caplog.records] == [502]  # type: ignore[attr-defined]


@pytest.mark.parametrize("raw", ["2", "-0.1", "often"])
def test_a_bad_sample_rate_names_the_variable(raw: str) -> None:
    with pytest.raises(ValueError, match="INFERY_REQUEST_LOG_SAMPLE"):
        request_log.sample_rate({"INFERY_REQUEST_LOG_SAMPLE": raw})
    assert request_log.sample_rate({}) == 1.0
