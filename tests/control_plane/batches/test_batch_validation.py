"""An input file's lines, checked before any is sent: OpenAI's errors, with line numbers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

from control_plane.batches.lines import NewLine
from control_plane.batches.validation import LineChecker, LineError, numbered_lines

CHAT = "/v1/chat/completions"


def line(custom_id: str = "a", url: str = CHAT, **body: object) -> bytes:
    body = body or {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def codes(checker: LineChecker, raws: list[bytes]) -> list[str]:
    out = []
    for number, raw in enumerate(raws, 1):
        checked = checker.check(number, raw)
        out.append(checked.code if isinstance(checked, LineError) else "ok")
    return out


def test_each_problem_has_its_code():
    checker = LineChecker(CHAT, None)
    raws = [
        line("a"),
        b"{oops",
        b"[1]",
        line("a"),
        orjson.dumps({"custom_id": "", "method": "POST", "url": CHAT, "body": {}}),
        orjson.dumps({"custom_id": "g", "method": "GET", "url": CHAT, "body": {}}),
        line("h", url="/v1/embeddings"),
        line("i", model="m"),
        line("j", model="m", messages=[{"role": "user", "content": "x"}], stream=True),
    ]
    assert codes(checker, raws) == [
        "ok",
        "invalid_json_line",
        "invalid_json_line",
        "duplicate_custom_id",
        "missing_custom_id",
        "invalid_method",
        "mismatched_endpoint",
        "invalid_body",
        "invalid_body",
    ]


def test_a_model_the_workspace_may_not_use_is_kept_as_a_failed_line():
    checker = LineChecker(CHAT, frozenset({"allowed"}))
    kept = checker.check(1, line("a", model="other", messages=[{"role": "user", "content": "x"}]))
    assert isinstance(kept, NewLine) and kept.error is not None and kept.error["code"] == "model_not_allowed"
    ok = checker.check(2, line("b", model="allowed", messages=[{"role": "user", "content": "x"}]))
    assert isinstance(ok, NewLine) and ok.error is None


async def pieces(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_lines_are_numbered_across_pieces_and_blank_lines_are_skipped():
    found = [item async for item in numbered_lines(pieces(b"one\r\ntw", b"o\n\n", b"thr", b"ee"))]
    assert found == [(1, b"one"), (2, b"two"), (4, b"three")]


async def test_a_line_too_long_comes_as_none_without_being_held(monkeypatch):
    from control_plane.batches import validation

    monkeypatch.setattr(validation, "MAX_LINE_BYTES", 4)
    found = [item async for item in numbered_lines(pieces(b"ok\n12", b"345", b"678\nfine\n"))]
    assert found == [(1, b"ok"), (2, None), (3, b"fine")]
