"""The command line that starts one simulator process: one place for every launcher."""

from __future__ import annotations

import sys


def command(
    kind: str,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    api_key: str | None = None,
    validate: bool = True,
    chunk_delay_ms: float = 0.0,
) -> list[str]:
    """``python -m simulators ...``; port 0 picks a free port, announced in the ``ready`` line."""
    argv = [sys.executable, "-m", "simulators", "--kind", kind, "--port", str(port), "--host", host]
    if api_key is not None:
        argv += ["--api-key", api_key]
    argv += ["--chunk-delay-ms", str(chunk_delay_ms), "--validate" if validate else "--no-validate"]
    return argv
