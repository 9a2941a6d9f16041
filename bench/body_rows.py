"""``make bench`` rows by prompt size: the gateway and Envoy alone, one request at a time.

The same non-streamed chat as the other rows with a user message of 1 KB to 8 MB
(``--body-sizes``), at concurrency 1: what a long-context request costs each process, and
whether that cost per byte stays flat as the prompt grows (issue 19, item 3). The
simulator echoes the prompt's first 48 words, so only the request grows. The rows join
the main table (mode ``chat 8 MB`` ...) and a table of CPU per KB of prompt follows it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from bench.scenarios import Result, Target
from bench.wrk import Request

SIZES = (1024, 100 * 1024, 1024 * 1024, 8 * 1024 * 1024)
CONCURRENCY = 1
_WORD = "gateway-bench-word-0000 "  # 24 bytes, as bench.run.prompt's words


def label(size: int) -> str:
    return f"{size // (1024 * 1024)} MB" if size >= 1024 * 1024 else f"{size // 1024} KB"


def mode(size: int) -> str:
    return f"chat {label(size)}"


def prompt(size: int) -> str:
    """A user message that makes the request body about ``size`` bytes."""
    return (_WORD * (max(1, size - 60) // len(_WORD) + 1))[: max(1, size - 60)].strip()


def measure(
    system: str,
    request: Callable[[str], Request],
    roles: dict[str, list[int]],
    sizes: tuple[int, ...],
    run: Callable[[Target], Result],
) -> list[Result]:
    """One row per size: ``request(text)`` builds the chat, ``run`` loads it at concurrency 1."""
    rows = []
    for size in sizes:
        chat = request(prompt(size))
        result = run(Target(system, chat, chat, b"[DONE]", roles))
        rows.append(dataclasses.replace(result, mode=mode(size)))
    return rows


def markdown(results: list[Result], sizes: tuple[int, ...]) -> list[str]:
    """CPU µs per KB of prompt, each process, gateway and Envoy alone side by side."""
    by_id = {r.id: r for r in results}
    rows = []
    for size in sizes:
        for system in ("envoy", "gateway"):
            r = by_id.get(f"{system}.{mode(size)}.c{CONCURRENCY}")
            if r is None or not r.ok:
                continue
            kb = size / 1024
            per_kb = ", ".join(f"{role} {ms * 1000 / kb:.2f}" for role, ms in r.cpu_ms_per_req.items())
            rows.append(
                f"| {label(size)} | {system} | {r.rps:,.1f} | {r.p50_ms or 0:.2f} | {per_kb} "
                f"| {', '.join(f'{k} {v:.0f}' for k, v in r.peak_rss_mb.items())} |"
            )
    if not rows:
        return []
    return [
        "",
        f"Prompt sizes (non-streamed chat, concurrency {CONCURRENCY}): CPU µs per KB of prompt, per process.",
        "",
        "| prompt | system | req/s | p50 ms | CPU µs per KB | peak RSS MB |",
        "| --- | --- | ---: | ---: | --- | --- |",
        *rows,
    ]
