"""bench/keep_cpu.py keeps every answer through the servicer, or through ext_proc's client and a
real gRPC server, and counts its CPU per keep."""

from __future__ import annotations

import json

import pytest

from bench import keep_cpu


def test_every_keep_is_stored_and_its_cpu_counted(capsys: pytest.CaptureFixture[str]) -> None:
    assert keep_cpu.main(["--keeps", "40", "--runs", "1", "--warmup", "8", "--think-ms", "0.5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["keeps"] == 40 and 1_000 < result["answer_bytes"] < 3_000
    assert result["best"]["own_us"] > 0 and result["best"]["keeps_per_transaction"] >= 1


def test_via_grpc_each_sides_cpu_is_counted(capsys: pytest.CaptureFixture[str]) -> None:
    """ext_proc's client here, the control plane in a server process of its own: both counted,
    and concurrent keeps carried several to a call. (The server's CPU is read from /proc, in clock
    ticks of 10 ms: enough keeps that it spends several.)"""
    assert keep_cpu.main(["--via", "grpc", "--keeps", "600", "--runs", "1", "--warmup", "8"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["via"] == "grpc" and result["keeps"] == 600
    best = result["best"]
    assert best["own_us"] > 0 and best["control_plane_us"] > 0
    assert best["keeps_per_call"] > 1 and best["keeps_per_transaction"] >= 1
