"""bench/keep_cpu.py keeps every answer through the servicer and counts its CPU per keep."""

from __future__ import annotations

import json

import pytest

from bench import keep_cpu


def test_every_keep_is_stored_and_its_cpu_counted(capsys: pytest.CaptureFixture[str]) -> None:
    assert keep_cpu.main(["--keeps", "40", "--runs", "1", "--warmup", "8", "--think-ms", "0.5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["keeps"] == 40 and 1_000 < result["answer_bytes"] < 3_000
    assert result["best"]["own_us"] > 0 and result["best"]["keeps_per_transaction"] >= 1
