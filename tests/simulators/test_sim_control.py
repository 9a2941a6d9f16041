"""simulators/control.py: the request log's bounds."""

from __future__ import annotations

from simulators.control import RequestLog


def test_the_request_log_is_bounded_by_count() -> None:
    log = RequestLog(limit=3)
    for i in range(5):
        log.add({"i": i}, 10)
    assert [e["i"] for e in log.entries()] == [2, 3, 4]


def test_the_request_log_is_bounded_by_the_bodies_bytes_and_keeps_the_newest() -> None:
    log = RequestLog(limit=100, max_bytes=1000)
    for i in range(10):
        log.add({"i": i}, 300)
    assert [e["i"] for e in log.entries()] == [7, 8, 9]  # 900 bytes
    log.add({"i": "big"}, 5000)  # over the budget alone: still there, the only one
    assert [e["i"] for e in log.entries()] == ["big"]
    log.clear()
    log.add({"i": "after"}, 900)
    assert [e["i"] for e in log.entries()] == ["after"]
