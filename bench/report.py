"""The table, the target ratios, and their JSON and Markdown forms.

Targets are ratios between rows of the same run, so a slow or noisy machine moves both sides
of each ratio together; absolute numbers are for context only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bench import body_rows
from bench.scenarios import Result
from bench.streams import HoldStats

LABELS = {
    "provider": "provider direct (OpenAI sim)",
    "provider_anthropic": "provider direct (Anthropic sim)",
    "envoy": "Envoy pass-through",
    "gateway": "gateway, OpenAI-format provider",
    "gateway_anthropic": "gateway, Anthropic translation",
    "gateway_responses": "gateway, Responses API, OpenAI-format provider (passed through)",
    "gateway_responses_anthropic": "gateway, Responses API, Anthropic translation (through chat)",
    "gateway_metrics_off": "gateway, metrics off",
    "gateway_traced": "gateway, every request traced (OTLP)",
    "litellm": "LiteLLM proxy",
    "portkey": "Portkey gateway (OSS, Node)",
    "tensorzero": "TensorZero gateway (Rust)",
    "files_envoy": "upload to the files service, Envoy alone",
    "files_gateway": "upload to the files service, through the gateway",
}
# The peers the gateway is compared with, each with the ratios it must beat (req/s ≥, p99 ≤).
PEERS = {
    "litellm": ("LiteLLM", 15.0, round(1 / 15, 4)),
    "portkey": ("Portkey", 1.0, 1.0),
    "tensorzero": ("TensorZero", 1.0, 1.0),
}
SYSTEM_ORDER = list(LABELS)
UNIT_DIGITS = {"x": 3, "ms": 2, "µs": 0, "streams": 0}
ROLE_ORDER = [
    "ext_proc", "envoy", "control_plane", "files", "litellm", "portkey", "tensorzero", "provider",
    "otlp_receiver", "loadgen",
]  # fmt: skip


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    limit: float
    at_most: bool  # True: value ≤ limit passes; False: value ≥ limit passes
    unit: str
    detail: str

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": None if self.value is None else round(self.value, 4),
            "limit": self.limit,
            "op": "<=" if self.at_most else ">=",
            "unit": self.unit,
            "pass": self.passed,
            "detail": self.detail,
        }


def _get(results: dict[str, Result], system: str, mode: str, conc: int) -> Result | None:
    return results.get(f"{system}.{mode}.c{conc}")


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def checks(all_results: Iterable[Result], hold: HoldStats | None, concurrency: int) -> list[Check]:
    results = {r.id: r for r in all_results}
    gw, envoy = (_get(results, s, "chat", concurrency) for s in ("gateway", "envoy"))
    gw1, prov1 = _get(results, "gateway", "chat", 1), _get(results, "provider", "chat", 1)
    gw_stream = _get(results, "gateway", "stream", concurrency)

    def val(r: Result | None, f: Callable[[Result], float | None]) -> float | None:
        return f(r) if r is not None else None

    out = [
        Check(
            f"gateway req/s ÷ Envoy pass-through req/s (c{concurrency})",
            _ratio(val(gw, lambda r: r.rps), val(envoy, lambda r: r.rps)),
            0.35,
            False,
            "x",
            f"{_n(val(gw, lambda r: r.rps))} vs {_n(val(envoy, lambda r: r.rps))} req/s",
        ),
    ]
    for system, (name, faster, p99_share) in PEERS.items():
        peer = _get(results, system, "chat", concurrency)
        out += [
            Check(
                f"gateway req/s ÷ {name} req/s (c{concurrency})",
                _ratio(val(gw, lambda r: r.rps), val(peer, lambda r: r.rps)),
                faster,
                False,
                "x",
                f"{_n(val(gw, lambda r: r.rps))} vs {_n(val(peer, lambda r: r.rps))} req/s",
            ),
            Check(
                f"gateway p99 ÷ {name} p99 (c{concurrency})",
                _ratio(val(gw, lambda r: r.p99_ms), val(peer, lambda r: r.p99_ms)),
                p99_share,
                True,
                "x",
                f"{_n(val(gw, lambda r: r.p99_ms), 2)} vs {_n(val(peer, lambda r: r.p99_ms), 2)} ms",
            ),
        ]
    added = None
    if gw1 and prov1 and gw1.p50_ms is not None and prov1.p50_ms is not None:
        added = gw1.p50_ms - prov1.p50_ms
    out.append(
        Check(
            "added latency at c1, p50 (gateway minus provider direct)",
            added,
            1.5,
            True,
            "ms",
            f"{_n(val(gw1, lambda r: r.p50_ms), 3)} vs {_n(val(prov1, lambda r: r.p50_ms), 3)} ms",
        )
    )
    # The switches: the gateway row (metrics on, tracing off) against the same gateway with one changed.
    metrics_off, traced = (
        _get(results, s, "chat", concurrency) for s in ("gateway_metrics_off", "gateway_traced")
    )
    for name, on, off, limit in (
        ("metrics on ÷ metrics off", gw, metrics_off, 0.9),
        ("tracing on ÷ tracing off", traced, gw, 0.5),
    ):
        out.append(
            Check(
                f"gateway req/s, {name} (c{concurrency})",
                _ratio(val(on, lambda r: r.rps), val(off, lambda r: r.rps)),
                limit,
                False,
                "x",
                f"{_n(val(on, lambda r: r.rps))} vs {_n(val(off, lambda r: r.rps))} req/s; ext_proc CPU per "
                f"request {_n(val(on, _ext_proc_ms), 3)} vs {_n(val(off, _ext_proc_ms), 3)} ms",
            )
        )
    per_chunk = gw_stream.cpu_us_per_chunk.get("ext_proc") if gw_stream else None
    detail = "ext_proc CPU ÷ SSE chunks delivered (per-request work included)"
    marginal = _marginal_us_per_chunk(gw_stream, gw)
    if marginal is not None:
        detail += f"; ≈ {marginal:.0f} µs after subtracting the non-streamed per-request cost"
    out.append(
        Check(
            f"ext_proc CPU per SSE chunk, OpenAI-format path (c{concurrency})",
            per_chunk,
            100.0,
            True,
            "µs",
            detail,
        )
    )
    if hold is not None:
        errors = sum(hold.stats.errors.values())
        # Pass means: every stream was open at the same moment and none failed.
        value = float(hold.max_open) if errors == 0 else 0.0
        mb = hold.mb_per_stream
        out.append(
            Check(
                f"{hold.wanted} concurrent open streams without errors",
                value,
                float(max(hold.wanted, 1000)),
                False,
                "streams",
                f"max open {hold.max_open}, errors {_errors(errors, dict(hold.stats.errors))}; "
                f"memory per stream (ext_proc + Envoy RSS) {'n/a' if mb is None else f'{mb * 1024:.1f} KB'}",
            )
        )
    return out


def _ext_proc_ms(result: Result) -> float | None:
    return result.cpu_ms_per_req.get("ext_proc")


def _marginal_us_per_chunk(stream: Result | None, chat: Result | None) -> float | None:
    """Per-chunk ext_proc CPU once each stream is charged what a non-streamed request costs."""
    if not stream or not chat or not stream.chunks:
        return None
    per_stream = stream.cpu_ms_per_req.get("ext_proc")
    per_request = chat.cpu_ms_per_req.get("ext_proc")
    if per_stream is None or per_request is None:
        return None
    return (per_stream - per_request) * 1000 * stream.ok / stream.chunks


def _errors(count: int, detail: dict[str, int]) -> str:
    if not count:
        return "0"
    return f"{count} ({', '.join(f'{k} {v}' for k, v in sorted(detail.items()))})"


def _n(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _roles(values: dict[str, float], digits: int) -> str:
    keys = sorted(values, key=lambda k: ROLE_ORDER.index(k) if k in ROLE_ORDER else len(ROLE_ORDER))
    return ", ".join(f"{k} {values[k]:.{digits}f}" for k in keys)


def sorted_results(results: Iterable[Result]) -> list[Result]:
    """Chat rows, then the rows by prompt size (``chat 8 MB``, ...), then streams."""
    return sorted(
        results,
        key=lambda r: (
            r.mode != "chat",
            r.mode == "stream",
            -r.concurrency,
            SYSTEM_ORDER.index(r.system),
        ),
    )


def markdown(
    results: list[Result],
    checks_: list[Check],
    hold: HoldStats | None,
    meta: dict[str, Any],
    body_sizes: tuple[int, ...] = (),
) -> str:
    peers = "".join(f"{LABELS[k].split(' ')[0]} {v}, " for k, v in meta.get("peer_versions", {}).items())
    lines = [
        f"Run {meta['started']} on {meta['cores']} cores, {meta['duration_s']} s per row after "
        f"{meta['warmup_s']} s warm-up; Envoy {meta['envoy_version']}, LiteLLM {meta['litellm_version']}, "
        f"{peers}{meta['ext_procs']} ext_proc process(es), Envoy --concurrency {meta['envoy_concurrency']}. "
        f"Streams: {meta['stream_chunks']} SSE chunks each, "
        f"provider pacing {meta['stream_chunk_delay_ms']} ms. Load average before/after: "
        f"{meta.get('loadavg_1m_before', 'n/a')} / {meta.get('loadavg_1m_after', 'n/a')}.",
        "",
        "| scenario | mode | conc | req/s | p50 ms | p99 ms | errors | TTFC p50 / p99 ms | chunks/s "
        "| CPU ms per request | CPU µs per chunk | peak RSS MB |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | --- | --- |",
    ]
    for r in sorted_results(r for r in results if r.mode != "upload"):
        ttfc = "" if r.ttfc_p50_ms is None else f"{r.ttfc_p50_ms:.2f} / {_n(r.ttfc_p99_ms, 2)}"
        chunk_rate = "" if r.chunks_per_s is None else f"{r.chunks_per_s:,.0f}"
        lines.append(
            f"| {LABELS[r.system]} | {r.mode} | {r.concurrency} | {r.rps:,.0f} | {_n(r.p50_ms, 2)} "
            f"| {_n(r.p99_ms, 2)} | {_errors(r.errors, r.error_detail)} | {ttfc} | {chunk_rate} "
            f"| {_roles(r.cpu_ms_per_req, 3)} | {_roles(r.cpu_us_per_chunk, 0)} "
            f"| {_roles(r.peak_rss_mb, 0)} |"
        )
    lines += upload_markdown(results)
    lines += body_rows.markdown(results, body_sizes)
    lines += ["", "| target | value | limit | result | detail |", "| --- | ---: | ---: | --- | --- |"]
    for c in checks_:
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[c.passed]
        limit = f"{'≤' if c.at_most else '≥'} {c.limit:g} {c.unit}"
        lines.append(
            f"| {c.name} | {_n(c.value, UNIT_DIGITS[c.unit])} {c.unit} | {limit} | {verdict} | {c.detail} |"
        )
    if hold is not None:
        s = hold.stats
        lines += [
            "",
            f"Held streams: {hold.wanted} opened over {meta['hold_ramp_s']} s through the gateway, "
            f"provider pacing {meta['hold_chunk_delay_ms']} ms; {s.ok} completed, "
            f"max open at once {hold.max_open}, errors {sum(s.errors.values())}; "
            f"RSS {_roles(hold.baseline_rss_mb, 0)} MB → {_roles(hold.rss_at_peak_mb, 0)} MB "
            f"with {hold.open_at_peak} open; per stream "
            f"{_roles({k: v * 1024 for k, v in hold.mb_per_stream_by_role.items()}, 1)} KB.",
        ]
    notes = meta.get("notes") or []
    if notes:
        lines += ["", *[f"Note: {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def upload_markdown(results: Iterable[Result]) -> list[str]:
    """The upload rows: uploads/s, and CPU per MB and peak RSS per process (memory must not grow
    with the file's size: compare the peaks with the file's MB)."""
    rows = sorted_results(r for r in results if r.mode == "upload")
    if not rows:
        return []
    lines = [
        "",
        "| uploads | file MB | conc | uploads/s | MB/s | p50 ms | p99 ms | errors | CPU ms per MB "
        "| peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for r in rows:
        mb = r.upload_mb or 0.0
        lines.append(
            f"| {LABELS[r.system]} | {mb:g} | {r.concurrency} | {r.rps:,.2f} | {r.rps * mb:,.1f} "
            f"| {_n(r.p50_ms, 1)} | {_n(r.p99_ms, 1)} | {_errors(r.errors, r.error_detail)} "
            f"| {_roles(r.cpu_ms_per_mb, 2)} | {_roles(r.peak_rss_mb, 0)} |"
        )
    return lines


def hold_json(hold: HoldStats | None) -> dict[str, Any] | None:
    if hold is None:
        return None
    mb = hold.mb_per_stream
    return {
        "streams": hold.wanted,
        "completed": hold.stats.ok,
        "errors": dict(hold.stats.errors),
        "max_open": hold.max_open,
        "open_at_peak": hold.open_at_peak,
        "baseline_rss_mb": {k: round(v, 1) for k, v in hold.baseline_rss_mb.items()},
        "rss_at_peak_mb": {k: round(v, 1) for k, v in hold.rss_at_peak_mb.items()},
        "kb_per_stream_by_role": {k: round(v * 1024, 1) for k, v in hold.mb_per_stream_by_role.items()},
        "kb_per_stream": None if mb is None else round(mb * 1024, 1),
        "duration_s": round(hold.stats.duration_s, 2),
    }
