"""Starting the bench's own processes (simulators, the pass-through Envoy, LiteLLM).

Each runs under ``timeout``: if the bench itself is killed before its ``finally`` blocks run,
nothing it started outlives the run by more than ``LIFETIME_S``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from infery.stack import Process, spawn, wait_until
from simulators.command import command

LIFETIME_S = 1800
_READY = re.compile(r"^ready (\w+) http://[\d.]+:(\d+)", re.MULTILINE)
_RECEIVED = re.compile(r"^received (\d+) spans", re.MULTILINE)


def bounded_spawn(name: str, argv: list[str], log_dir: Path, env: Mapping[str, str] | None = None) -> Process:
    """Like ``infery.stack.spawn``, with a fresh log: readiness is read from it."""
    (log_dir / f"{name}.log").unlink(missing_ok=True)
    return spawn(name, ["timeout", "-k", "5", str(LIFETIME_S), *argv], log_dir, env)


def spawn_announcing(
    name: str,
    argv: list[str],
    log_dir: Path,
    announced: re.Pattern[str],
    what: str,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
) -> tuple[Process, re.Match[str]]:
    """``bounded_spawn``, then wait for the line it announces itself with (its port, read back
    from the match); stopped again if it never does."""
    proc = bounded_spawn(name, argv, log_dir, env)
    try:
        wait_until(lambda: announced.search(proc.log()), what, timeout_s, [proc])
    except BaseException:
        proc.stop()
        raise
    match = announced.search(proc.log())
    assert match is not None
    return proc, match


@dataclass
class Simulator:
    kind: str
    process: Process
    port: int

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The API root a provider's ``base_url`` holds (OpenAI's includes ``/v1``)."""
        return self.root + ("/v1" if self.kind == "openai" else "")


def start_simulator(name: str, kind: str, api_key: str, chunk_delay_ms: float, log_dir: Path) -> Simulator:
    """A simulated provider on a port it picks itself (read back from its ``ready`` line)."""
    argv = command(kind, api_key=api_key, validate=False, chunk_delay_ms=chunk_delay_ms)
    proc, ready = spawn_announcing(name, argv, log_dir, _READY, f"the {name} simulator", 30)
    return Simulator(kind, proc, int(ready.group(2)))


@dataclass
class OtlpReceiver:
    """The bench's OTLP/gRPC trace receiver, a process of its own (``python -m
    simulators.otlp_collector``: it counts spans and keeps none), so that its CPU is measured
    apart from the bench's, as a role of the row."""

    process: Process
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        """Stop it; the spans it received."""
        self.process.stop()
        match = _RECEIVED.search(self.process.log())
        return int(match.group(1)) if match else 0


def start_otlp_receiver(log_dir: Path) -> OtlpReceiver:
    argv = [sys.executable, "-m", "simulators.otlp_collector"]
    proc, ready = spawn_announcing("otlp-receiver", argv, log_dir, _READY, "the OTLP receiver", 30)
    return OtlpReceiver(proc, int(ready.group(2)))
