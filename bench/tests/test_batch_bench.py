"""The batch bench runs end to end with a few lines (the full 5,000-line run is the lead's)."""

from __future__ import annotations

from pathlib import Path

from bench import batch


def test_a_small_batch_bench_runs_and_reports_every_figure(tmp_path: Path) -> None:
    result = batch.measure(lines=20, workers=1, run_dir=tmp_path / "run", timeout_s=120)
    assert result["status"] == "completed" and result["completed"] == 20 and result["failed"] == 0
    assert result["lines_per_s"] > 0
    assert {"envoy", "ext_proc", "batch_worker", "control_plane", "files"} <= set(result["cpu_ms_per_line"])
    assert result["live_requests"] > 0 and result["live_errors"] == 0
    assert 0 < result["live_p50_ms"] <= result["live_p99_ms"]
    assert "| 20 | 1 | completed |" in batch.table(result)
