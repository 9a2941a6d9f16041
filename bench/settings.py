"""Bench settings: the command line of ``python -m bench`` (``make bench ARGS="--quick"``)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from bench import body_rows

HERE = Path(__file__).resolve().parent
SYSTEMS = (
    "provider",
    "provider_anthropic",
    "envoy",
    "gateway",
    "gateway_anthropic",
    "gateway_responses",
    "gateway_responses_anthropic",
    # The gateway again with one switch changed, chat at the loaded concurrency only: what
    # metrics cost (the gateway row has them on) and what tracing every request costs.
    "gateway_metrics_off",
    "gateway_traced",
    "litellm",
    "portkey",
    "tensorzero",
    "files_envoy",
    "files_gateway",
)
# The toggles: a system name -> the environment its gateway runs with (bench/gateway.py).
TOGGLES = {"gateway_metrics_off": {"INFERY_METRICS_PORT": "0"}, "gateway_traced": {}}


@dataclass(frozen=True)
class Settings:
    duration_s: float = 10.0
    warmup_s: float = 2.0
    concurrency: int = 16
    prompt_words: int = 48
    stream_chunk_delay_ms: float = 2.0
    stream_timeout_s: float = 60.0
    hold_streams: int = 1000
    hold_ramp_s: float = 3.0
    hold_chunk_delay_ms: float = 1000.0
    hold_words: int = 8
    ext_procs: int = 1
    envoy_concurrency: int = 1
    upload_mb: float = 10.0  # the file of the upload rows (files_envoy, files_gateway)
    upload_concurrency: int = 4
    systems: tuple[str, ...] = SYSTEMS
    hold: bool = True
    body_sizes: tuple[int, ...] = body_rows.SIZES
    quick: bool = False
    work_dir: Path = HERE / "work"
    out_dir: Path = HERE / "results"


def parse(argv: list[str] | None = None) -> Settings:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Side-by-side benchmark: provider direct, Envoy pass-through, the gateway, its peers.",
    )
    p.add_argument("--duration", type=float, default=None, help=f"seconds per row (default {d.duration_s:g})")
    p.add_argument(
        "--warmup", type=float, default=None, help=f"warm-up seconds per row (default {d.warmup_s:g})"
    )
    p.add_argument(
        "--quick", action="store_true", help="3 s rows, 1 s warm-up: a smoke run of the whole table"
    )
    p.add_argument(
        "-c", "--concurrency", type=int, default=d.concurrency, help="connections for the loaded rows"
    )
    p.add_argument(
        "--prompt-words",
        type=int,
        default=d.prompt_words,
        help="words in the user message; the simulator echoes them, two SSE chunks per word",
    )
    p.add_argument(
        "--stream-chunk-delay-ms",
        type=float,
        default=d.stream_chunk_delay_ms,
        help="provider pause between SSE chunks in the stream rows",
    )
    p.add_argument(
        "--hold-streams", type=int, default=d.hold_streams, help="streams held open at once (0: skip)"
    )
    p.add_argument(
        "--hold-chunk-delay-ms",
        type=float,
        default=d.hold_chunk_delay_ms,
        help="provider pause between SSE chunks while streams are held open",
    )
    p.add_argument("--ext-procs", type=int, default=d.ext_procs, help="ext_proc processes behind the gateway")
    p.add_argument(
        "--envoy-concurrency",
        type=int,
        default=d.envoy_concurrency,
        help="Envoy worker threads (gateway and pass-through alike)",
    )
    p.add_argument("--upload-mb", type=float, default=d.upload_mb, help="MB per file in the upload rows")
    p.add_argument(
        "--upload-concurrency", type=int, default=d.upload_concurrency, help="connections in the upload rows"
    )
    p.add_argument(
        "--only",
        default=None,
        help=f"comma-separated subset of {','.join(SYSTEMS)} (ratios needing a skipped row read n/a)",
    )
    p.add_argument(
        "--body-sizes",
        default=",".join(str(size) for size in d.body_sizes),
        help="prompt sizes in bytes of the gateway's and Envoy's rows by size, concurrency 1 ('' skips them)",
    )
    p.add_argument("--out", type=Path, default=d.out_dir, help="where latest.json and latest.md go")
    a = p.parse_args(argv)
    systems = SYSTEMS
    if a.only:
        systems = tuple(s.strip() for s in a.only.split(",") if s.strip())
        unknown = set(systems) - set(SYSTEMS)
        if unknown:
            p.error(f"unknown systems {sorted(unknown)}; known: {', '.join(SYSTEMS)}")
    duration = a.duration if a.duration is not None else (3.0 if a.quick else d.duration_s)
    warmup = a.warmup if a.warmup is not None else (1.0 if a.quick else d.warmup_s)
    if duration <= 0 or a.concurrency < 1 or a.ext_procs < 1 or a.prompt_words < 1:
        p.error("--duration, --concurrency, --ext-procs and --prompt-words must be positive")
    if a.upload_mb <= 0 or a.upload_concurrency < 1:
        p.error("--upload-mb and --upload-concurrency must be positive")
    return Settings(
        duration_s=duration,
        warmup_s=max(0.0, warmup),
        concurrency=a.concurrency,
        prompt_words=a.prompt_words,
        stream_chunk_delay_ms=a.stream_chunk_delay_ms,
        hold_streams=max(0, a.hold_streams),
        hold_chunk_delay_ms=a.hold_chunk_delay_ms,
        ext_procs=a.ext_procs,
        envoy_concurrency=a.envoy_concurrency,
        upload_mb=a.upload_mb,
        upload_concurrency=a.upload_concurrency,
        systems=systems,
        hold=a.hold_streams > 0 and "gateway" in systems,
        quick=a.quick,
        body_sizes=tuple(int(size) for size in a.body_sizes.split(",") if size.strip()),
        out_dir=a.out,
    )
