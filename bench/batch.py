"""``make bench-batch``: one batch of ``--lines`` chat lines through a real gateway, with live traffic.

One gateway (control plane, files service, one ext_proc, one Envoy, ``--workers`` batch
workers) in front of the OpenAI simulator. The batch is uploaded and created with the openai
SDK, as a client would; while it runs, a probe sends live chat requests one after another
through the same listener and key's workspace. Measured:

- lines per second: the batch's lines ÷ the seconds from ``in_progress_at`` to ``completed_at``
  as the gateway stamped them (whole seconds: use enough lines that the run lasts a while);
- gateway CPU per line: each process's CPU (``/proc``, its whole tree) over the run ÷ lines,
  per role (Envoy, ext_proc, control plane, files service, batch workers); the live probe's
  requests are served by the same processes meanwhile and are included (``live_requests`` says
  how many: a sequential probe, a small share beside thousands of lines);
- live traffic while it runs: the probe's p50 and p99 latency and its errors (a live request
  must never be refused because of a batch: batches have their own lane).

The table goes to ``bench/results/batch.md`` (and ``batch.json``); bench/README.md explains it.
Never part of ``make test``; ``bench/tests/test_batch_bench.py`` runs it once with a few lines.
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai

from bench import gateway
from bench.procstat import cpu_seconds, tree
from bench.scenarios import percentile
from infery.stack import Stack
from simulators.testing import SimulatorProcess

RESULTS = Path(__file__).resolve().parent / "results"
WORK = Path(__file__).resolve().parent / "work"
MODEL = "gpt-4o-mini"
PROMPT = "Summarise the benefits of batching requests in one short paragraph please"


@dataclass
class Probe:
    """Live chat requests, one after another, until stopped: their latencies and failures."""

    url: str
    key: str
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}
        headers = {"authorization": f"Bearer {self.key}"}
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    ok = (
                        client.post(f"{self.url}/chat/completions", json=body, headers=headers).status_code
                        == 200
                    )
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.latencies_ms.append((time.perf_counter() - started) * 1000)
                else:
                    self.errors += 1

    def stop(self) -> None:
        self._stop.set()


def roles(stack: Stack) -> dict[str, list[int]]:
    """Process ids per role (each with its process tree)."""
    named: dict[str, list[int]] = {}
    for name, proc in stack.processes.items():
        role = (
            "ext_proc"
            if name.startswith("ext_proc")
            else "batch_worker"
            if name.startswith("batch")
            else name
        )
        named.setdefault(role, []).append(proc.popen.pid)
    return named


def cpu_by_role(pids: dict[str, list[int]]) -> dict[str, float]:
    return {role: sum(cpu_seconds(pid) for pid in tree(roots)) for role, roots in pids.items()}


def batch_file(lines: int) -> bytes:
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64}
    return b"".join(
        json.dumps(
            {"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        ).encode()
        + b"\n"
        for i in range(lines)
    )


def measure(lines: int, workers: int, run_dir: Path, timeout_s: float) -> dict[str, Any]:
    with SimulatorProcess("openai", api_key="sk-bench", validate=False) as sim:
        stack, token = gateway.start(run_dir, ext_procs=1, envoy_concurrency=1, batch_workers=workers)
        try:
            upstream = gateway.Upstream("sim", "openai", sim.base_url, "sk-bench", ((MODEL, MODEL),))
            probe_body = {"messages": [{"role": "user", "content": "hi"}]}
            key = gateway.configure(stack, token, [upstream], probe_body)
            client = openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0)
            file_id = client.files.create(file=("bench.jsonl", batch_file(lines)), purpose="batch").id
            probe = Probe(stack.base_url, key)
            pids = roles(stack)
            before = cpu_by_role(pids)
            thread = threading.Thread(target=probe.run, daemon=True)
            thread.start()
            batch = client.batches.create(
                input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            deadline = time.monotonic() + timeout_s
            while batch.status not in ("completed", "failed", "cancelled", "expired"):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the batch did not finish within {timeout_s}s: {batch.request_counts}"
                    )
                time.sleep(0.2)
                batch = client.batches.retrieve(batch.id)
            probe.stop()
            thread.join(35)
            after = cpu_by_role(pids)
        finally:
            stack.stop()
    assert batch.request_counts is not None
    seconds = max(1, (batch.completed_at or 0) - (batch.in_progress_at or 0))
    done = batch.request_counts.completed
    return {
        "lines": lines,
        "workers": workers,
        "status": batch.status,
        "completed": done,
        "failed": batch.request_counts.failed,
        "seconds": seconds,
        "lines_per_s": round(done / seconds, 1),
        "cpu_ms_per_line": {
            role: round((after[role] - before[role]) * 1000 / max(1, done), 3) for role in after
        },
        "live_requests": len(probe.latencies_ms),
        "live_errors": probe.errors,
        "live_p50_ms": _round(percentile(probe.latencies_ms, 50)),
        "live_p99_ms": _round(percentile(probe.latencies_ms, 99)),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def table(result: dict[str, Any]) -> str:
    cpu = ", ".join(f"{role} {ms}" for role, ms in result["cpu_ms_per_line"].items())
    return "\n".join(
        [
            "| lines | workers | status | lines/s | gateway CPU ms per line | live p50 / p99 ms"
            " | live errors |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| {result['lines']} | {result['workers']} | {result['status']} | {result['lines_per_s']}"
            f" | {cpu} | {result['live_p50_ms']} / {result['live_p99_ms']} | {result['live_errors']} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=5000, help="lines in the batch (default 5000)")
    parser.add_argument("--workers", type=int, default=1, help="batch workers (default 1)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds the batch may take")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where batch.md and batch.json go")
    args = parser.parse_args(argv)
    run_dir = WORK / "batch"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh store each run (the last run's logs until then)
    run_dir.mkdir(parents=True)
    result = measure(args.lines, args.workers, run_dir, args.timeout)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "batch.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "batch.md").write_text(table(result) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
