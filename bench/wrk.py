"""Non-streamed load with wrk: one POST repeated on keep-alive connections.

wrk is C and uses one thread here, so the load generator costs little of the two cores the
systems under test share. A Lua ``done()`` hook prints the summary as one JSON line, which
is sturdier than scraping wrk's human-readable report.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import orjson

MARK = "BENCH_JSON "

_DONE_HOOK = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    "MARK", summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


@dataclass(frozen=True, slots=True)
class Request:
    """What every load generator sends to one system under test."""

    host: str
    port: int
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    errors: int
    error_detail: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def ensure_wrk() -> str:
    """The wrk binary, installed from Debian's packages when missing (the bench runs as root)."""
    found = shutil.which("wrk")
    if found:
        return found
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, capture_output=True, timeout=300).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300)
        subprocess.run(install, capture_output=True, timeout=300, check=True)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed and `apt-get install wrk` did not provide it")
    return found


def _lua_string(value: str) -> str:
    # A JSON string literal (UTF-8 kept as is) is a valid Lua string literal.
    return json.dumps(value, ensure_ascii=False)


def write_script(request: Request, path: Path) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(request.body.decode())}"]
    lines += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in request.headers.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + _DONE_HOOK.replace('"MARK"', _lua_string(MARK)))
    return path


def run(
    request: Request, script: Path, *, connections: int, duration_s: float, wrk: str = "wrk"
) -> WrkResult:
    argv = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        str(script),
        request.url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout[-2000:]}")
    raw = orjson.loads(lines[-1][len(MARK) :])
    detail = {k: int(raw[k]) for k in ("connect", "read", "write", "status", "timeout") if raw[k]}
    return WrkResult(
        requests=int(raw["requests"]),
        duration_s=raw["duration_us"] / 1e6,
        errors=sum(detail.values()),
        error_detail=detail,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
    )
