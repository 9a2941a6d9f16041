"""CPU time and memory of process trees, read from /proc.

A system under test is a few named roles (Envoy, ext_proc, provider, ...), each one or more root
PIDs. Launchers such as ``timeout`` or LiteLLM's CLI may put the real work in child processes,
so every figure covers the whole tree below each root.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: fields start after the last ')'.
    return raw[raw.rfind(")") + 2 :].split()


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                parents[int(entry.name)] = int(fields[1])
    return parents


def tree(roots: Iterable[int]) -> list[int]:
    """The roots and all their live descendants."""
    parents = _parents()
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = [pid for pid in roots if pid in parents]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system time of the process (all threads) and of its reaped children."""
    fields = _stat_fields(pid)
    if not fields:
        return 0.0
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) * TICK_S


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak(pid: int) -> bool:
    """Restart the VmHWM high-water mark at the current RSS (Linux ≥ 4.0, needs privilege)."""
    try:
        (PROC / str(pid) / "clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class Usage:
    cpu_s: float
    peak_rss_mb: float


class Meter:
    """CPU used and peak RSS reached by each role between ``start()`` and ``stop()``."""

    def __init__(self, roles: Mapping[str, Iterable[int]]) -> None:
        self.roles = {name: list(pids) for name, pids in roles.items()}
        self._cpu0: dict[str, float] = {}
        self.peak_is_lifetime = False  # True when the high-water mark could not be reset

    def _cpu(self, pids: list[int]) -> float:
        return sum(cpu_seconds(pid) for pid in tree(pids))

    def start(self) -> None:
        for pids in self.roles.values():
            for pid in tree(pids):
                if not reset_peak(pid):
                    self.peak_is_lifetime = True
        self._cpu0 = {name: self._cpu(pids) for name, pids in self.roles.items()}

    def stop(self) -> dict[str, Usage]:
        return {
            name: Usage(
                cpu_s=max(0.0, self._cpu(pids) - self._cpu0.get(name, 0.0)),
                peak_rss_mb=sum(_status_kb(pid, "VmHWM") for pid in tree(pids)) / 1024,
            )
            for name, pids in self.roles.items()
        }


def rss_mb(roots: Iterable[int]) -> float:
    """Current resident memory of the trees below ``roots``."""
    return sum(_status_kb(pid, "VmRSS") for pid in tree(roots)) / 1024


def own_cpu_seconds() -> float:
    """This process's CPU time (the stream client's cost)."""
    times = os.times()
    return times.user + times.system


def children_cpu_seconds() -> float:
    """CPU of reaped child processes (wrk, once it has exited)."""
    times = os.times()
    return times.children_user + times.children_system


def raise_fd_limit(wanted: int = 65536) -> int:
    """Lift the soft open-file limit toward ``wanted``; children (Envoy, simulators) inherit it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
