"""Target ratios and their rendering: computed from rows of the same run, n/a when a row is missing."""

from __future__ import annotations

from collections import Counter

from bench import report
from bench.scenarios import Result, percentile
from bench.streams import HoldStats, StreamStats


def row(system: str, mode: str, conc: int, ok: int, p50: float, p99: float, **extra: object) -> Result:
    base: dict[str, object] = dict(
        system=system,
        mode=mode,
        concurrency=conc,
        duration_s=10.0,
        ok=ok,
        errors=0,
        error_detail={},
        p50_ms=p50,
        p99_ms=p99,
        cpu_ms_per_req={"ext_proc": 1.0},
        peak_rss_mb={"ext_proc": 50.0},
    )
    return Result(**{**base, **extra})  # type: ignore[arg-type]


def test_ratios_pass_and_fail_against_their_limits() -> None:
    rows = [
        row("envoy", "chat", 16, 40_000, 3.0, 8.0),
        row("gateway", "chat", 16, 10_000, 12.0, 40.0),
        row("litellm", "chat", 16, 1_000, 150.0, 300.0),
        row("portkey", "chat", 16, 8_000, 2.0, 50.0),
        row("tensorzero", "chat", 16, 12_000, 1.0, 30.0),
        row("provider", "chat", 1, 60_000, 0.10, 1.0),
        row("gateway", "chat", 1, 5_000, 1.90, 9.0),
        row(
            "gateway",
            "stream",
            16,
            400,
            300.0,
            400.0,
            chunks=40_000,
            cpu_ms_per_req={"ext_proc": 9.0},
            cpu_us_per_chunk={"ext_proc": 90.0},
        ),
    ]
    hold = HoldStats(
        1000,
        StreamStats(ok=1000),
        max_open=1000,
        baseline_rss_mb={"ext_proc": 60.0, "envoy": 40.0},
        rss_at_peak_mb={"ext_proc": 110.0, "envoy": 90.0},
        open_at_peak=1000,
    )
    checks = {c.name.split(" (")[0]: c for c in report.checks(rows, hold, 16)}
    assert checks["gateway req/s ÷ Envoy pass-through req/s"].value == 0.25
    assert checks["gateway req/s ÷ Envoy pass-through req/s"].passed is False
    assert checks["gateway req/s ÷ LiteLLM req/s"].passed is False  # 10x < 15x
    assert checks["gateway p99 ÷ LiteLLM p99"].passed is False  # 0.133 > 1/15
    assert (
        checks["gateway req/s ÷ Portkey req/s"].value == 1.25
        and checks["gateway req/s ÷ Portkey req/s"].passed
    )
    assert checks["gateway p99 ÷ Portkey p99"].value == 0.8 and checks["gateway p99 ÷ Portkey p99"].passed
    assert checks["gateway req/s ÷ TensorZero req/s"].passed is False  # slower than TensorZero
    assert checks["gateway p99 ÷ TensorZero p99"].passed is False
    added = checks["added latency at c1, p50"]
    assert added.value is not None and abs(added.value - 1.8) < 1e-9 and added.passed is False
    assert checks["ext_proc CPU per SSE chunk, OpenAI-format path"].passed is True
    held = checks["1000 concurrent open streams without errors"]
    assert held.passed is True and "102.4 KB" in held.detail


def test_the_switches_are_the_gateway_row_against_the_same_gateway_with_one_switch_changed() -> None:
    rows = [
        row("gateway", "chat", 16, 10_000, 12.0, 40.0, cpu_ms_per_req={"ext_proc": 0.2}),
        row("gateway_metrics_off", "chat", 16, 10_500, 12.0, 40.0, cpu_ms_per_req={"ext_proc": 0.19}),
        row("gateway_traced", "chat", 16, 4_000, 12.0, 40.0, cpu_ms_per_req={"ext_proc": 0.6}),
    ]
    checks = {c.name.split(" (")[0]: c for c in report.checks(rows, None, 16)}
    metrics = checks["gateway req/s, metrics on ÷ metrics off"]
    assert metrics.value is not None and abs(metrics.value - 10_000 / 10_500) < 1e-9 and metrics.passed
    assert "0.200 vs 0.190 ms" in metrics.detail
    traced = checks["gateway req/s, tracing on ÷ tracing off"]
    assert traced.value == 0.4 and traced.passed is False and "0.600 vs 0.200 ms" in traced.detail


def test_missing_rows_and_failed_holds_are_not_passes() -> None:
    hold = HoldStats(
        1000,
        StreamStats(ok=990, errors=Counter(timeout=10)),
        max_open=1000,
        baseline_rss_mb={},
        rss_at_peak_mb={},
        open_at_peak=1000,
    )
    checks = report.checks([row("gateway", "chat", 16, 100, 1.0, 2.0)], hold, 16)
    # every ratio lacks a row (the peers' and the toggles' too)
    assert [c.passed for c in checks[:-1]] == [None] * (len(checks) - 1)
    assert checks[-1].passed is False


def test_markdown_has_one_row_per_result_and_every_target() -> None:
    rows = [
        row("gateway", "chat", 16, 100, 1.0, 2.0),
        row(
            "provider",
            "stream",
            1,
            10,
            200.0,
            210.0,
            ttfc_p50_ms=1.0,
            ttfc_p99_ms=2.0,
            chunks=1000,
            cpu_us_per_chunk={"provider": 20.0},
        ),
    ]
    checks = report.checks(rows, None, 16)
    meta = {
        "started": "now",
        "cores": 2,
        "duration_s": 10,
        "warmup_s": 2,
        "envoy_version": "1.40.0",
        "litellm_version": "x",
        "ext_procs": 1,
        "envoy_concurrency": 2,
        "stream_chunks": 100,
        "stream_chunk_delay_ms": 2,
        "notes": ["a note"],
    }
    text = report.markdown(rows, checks, None, meta)
    assert text.count("| gateway, OpenAI-format provider | chat | 16 |") == 1
    assert "| provider direct (OpenAI sim) | stream | 1 |" in text and "1.00 / 2.00" in text
    assert all(c.name in text for c in checks) and "Note: a note" in text


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile([], 50) is None


def test_upload_rows_have_their_own_table_with_cpu_per_mb() -> None:
    rows = [
        row("gateway", "chat", 16, 10_000, 12.0, 40.0),
        row(
            "files_gateway",
            "upload",
            4,
            50,
            400.0,
            900.0,
            cpu_ms_per_req={"ext_proc": 0.5, "envoy": 20.0, "files": 80.0},
            peak_rss_mb={"ext_proc": 60.0, "envoy": 70.0, "files": 110.0},
            upload_mb=10.0,
        ),
    ]
    upload = rows[1]
    assert upload.cpu_ms_per_mb == {"ext_proc": 0.05, "envoy": 2.0, "files": 8.0}
    assert upload.to_json()["cpu_ms_per_mb"] == {"ext_proc": 0.05, "envoy": 2.0, "files": 8.0}
    meta = {
        k: "x" for k in ("started", "cores", "duration_s", "warmup_s", "envoy_version", "litellm_version")
    }
    meta |= {k: "x" for k in ("ext_procs", "envoy_concurrency", "stream_chunks", "stream_chunk_delay_ms")}
    table = report.markdown(rows, [], None, meta)
    chat_table, upload_table = table.split("| uploads |")
    assert "through the gateway" not in chat_table  # not a chat row
    line = next(x for x in upload_table.splitlines() if "through the gateway" in x)
    assert "| 10 | 4 | 5.00 | 50.0 |" in line
    assert "ext_proc 0.05, envoy 2.00, files 8.00" in line and "files 110" in line
