"""What one request-log line costs ext_proc's event loop: ``python -m bench.request_log_cost``.

In-process, to a file: ext_proc's line (ext_proc/request_log.py: orjson from the usage record,
batched to a writer thread) against the same fields through ``logging`` and python-json-logger
(the way it was written before, ~25 µs here, ~129 µs measured on a loaded machine). The loop
yields every 100 lines, as a serving loop does, so the writer thread gets its turns.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Callable

from infery_proto import logs
from infery_proto.v1 import usage_pb2

from ext_proc.request_log import FIELDS, RequestLog

RECORD = usage_pb2.UsageRecord(
    request_id="01a23ac8bed834e4aa561e5bb550d2de",
    workspace_id="35c3046a-aded-4fa2-979a-25850ef34c0c",
    endpoint="/v1/chat/completions",
    model_requested="gpt-4o-mini",
    model_used="gpt-4o-mini",
    provider="openai",
    status=200,
    latency_ms=12,
    ttft_ms=3,
    input_tokens=48,
    output_tokens=96,
    credits="0.000123",
)


async def _per_line(log: Callable[[usage_pb2.UsageRecord], None], lines: int) -> float:
    for _ in range(lines // 10):  # warm-up
        log(RECORD)
    started = time.perf_counter()
    for i in range(lines):
        log(RECORD)
        if i % 100 == 99:
            await asyncio.sleep(0)
    return (time.perf_counter() - started) / lines * 1e6


async def _measure(lines: int, directory: str) -> dict[str, float]:
    fd = os.open(os.path.join(directory, "requests.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    requests = RequestLog(fd, sample=1.0)
    ext_proc = await _per_line(requests.line, lines)
    requests.close()
    os.close(fd)

    with open(os.path.join(directory, "logging.log"), "w") as out:
        logs.configure("INFO", "json")
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(out)
        framework = logging.getLogger("infery.requests")

        def through_logging(rec: usage_pb2.UsageRecord) -> None:
            framework.info("request", extra={name: getattr(rec, name) for name in FIELDS})

        formatted = await _per_line(through_logging, lines)
    return {"ext_proc RequestLog": ext_proc, "logging + python-json-logger": formatted}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.request_log_cost", description=__doc__)
    parser.add_argument("--lines", type=int, default=20_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        results = asyncio.run(_measure(args.lines, directory))
    for name, micros in results.items():
        print(f"{name}: {micros:.1f} µs per line")


if __name__ == "__main__":
    main()
