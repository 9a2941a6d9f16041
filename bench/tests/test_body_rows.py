"""bench/body_rows.py: the rows by prompt size and their table of CPU per KB."""

from __future__ import annotations

import orjson

from bench import body_rows
from bench.scenarios import Result, Target
from bench.wrk import Request


def _request(text: str) -> Request:
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": text}]})
    return Request("127.0.0.1", 1, "/v1/chat/completions", {}, body)


def test_each_size_is_one_row_of_its_own_mode_with_a_body_of_that_size() -> None:
    seen: list[int] = []

    def run(target: Target) -> Result:
        seen.append(len(target.chat.body))
        return Result(target.system, "chat", 1, 2.0, 4, 0, {}, 1.0, 2.0, {"ext_proc": 2.0}, {"ext_proc": 70})

    rows = body_rows.measure("gateway", _request, {}, (1024, 1024 * 1024), run)
    assert [r.mode for r in rows] == ["chat 1 KB", "chat 1 MB"]
    assert abs(seen[0] - 1024) < 64 and abs(seen[1] - 1024 * 1024) < 64
    table = "\n".join(body_rows.markdown(rows, (1024, 1024 * 1024)))
    # 2 ms per request over 1 KB is 2,000 µs per KB; over 1 MB, 1.95 µs per KB.
    assert "| 1 KB | gateway | 2.0 | 1.00 | ext_proc 2000.00 |" in table
    assert "| 1 MB | gateway | 2.0 | 1.00 | ext_proc 1.95 |" in table
