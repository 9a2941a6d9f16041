"""``make bench-scale``: the configuration at scale (issue 18), measured on a real gateway.

One gateway (control plane on PostgreSQL, two ext_proc processes, one Envoy) in front of the
OpenAI simulator. Phases:

1. bulk load: ``--keys`` keys created through the store (``create_keys``, 10,000 per
   transaction); time until the last one works; memory per key of each process;
2. steady writes: keys created through the admin API at ``--write-rate``/s for
   ``--write-seconds``, while revocations and creations are timed (in force = every ext_proc
   answers accordingly: ``CONSECUTIVE`` answers in a row through Envoy's round robin), a
   probe measures request latency (a stall shows as its maximum) and the control plane's CPU
   is divided by the number of changes;
3. chains: the latency of a model without a chain with 1 chain configured, then ``--chains``
   chains created through the admin API, the time until the last one is in force, and the
   same latency again.

The table goes to ``bench/results/scale.md`` (and ``scale.json``); bench/README.md explains it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy.engine import make_url
from sqlmodel import col, select

from bench.procstat import cpu_seconds, rss_mb
from control_plane.resources.bulk_keys import create_keys
from control_plane.store.db import open_store
from control_plane.store.tables import Workspace
from infery.admin_client import AdminClient
from infery.stack import Ports, Stack
from simulators.testing import SimulatorProcess

RESULTS = Path(__file__).resolve().parent / "results"
REDIS_URL = os.environ.get("INFERY_REDIS_URL") or "redis://127.0.0.1:6379/9"
POSTGRES_URL = os.environ.get("INFERY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CONSECUTIVE = 4  # answers in a row that prove a change is in force on both ext_procs
BULK_PER_TRANSACTION = 10_000
HI = [{"role": "user", "content": "hi"}]
SLOW_APPLY = re.compile(r"applying (\d+) \S+\.(\w+) took ([\d.]+) ms \(([\d.]+) ms CPU\)")


@dataclass
class Results:
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (measure, value, target)
    raw: dict[str, Any] = field(default_factory=dict)

    def add(self, measure: str, value: str, target: str = "") -> None:
        self.rows.append((measure, value, target))
        print(f"{measure}: {value}" + (f"  (target {target})" if target else ""), flush=True)


@contextlib.contextmanager
def _database() -> Iterator[str]:
    admin = make_url(POSTGRES_URL)
    name = f"infery_bench_scale_{uuid.uuid4().hex[:8]}"
    connection = psycopg.connect(
        admin.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True
    )
    with connection:
        connection.execute(f'CREATE DATABASE "{name}"')
        try:
            url = admin.set(drivername="postgresql+psycopg", database=name)
            yield url.render_as_string(hide_password=False)
        finally:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _status(client: httpx.Client, secret: str) -> int:
    return client.get("/models", headers={"authorization": f"Bearer {secret}"}).status_code


def _until(check: Callable[[], bool], timeout: float = 30.0) -> float:
    """Seconds until ``check()`` is true ``CONSECUTIVE`` times in a row (inf if never)."""
    started = time.perf_counter()
    streak = 0
    while time.perf_counter() - started < timeout:
        streak = streak + 1 if check() else 0
        if streak >= CONSECUTIVE:
            return time.perf_counter() - started
    return float("inf")


def _pids(stack: Stack, prefix: str) -> list[int]:
    return [p.popen.pid for name, p in stack.processes.items() if name.startswith(prefix)]


def _ms(seconds: float) -> str:
    return "never" if seconds == float("inf") else f"{seconds * 1000:.0f} ms"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _latencies(client: httpx.Client, secret: str, model: str, count: int) -> list[float]:
    out = []
    headers = {"authorization": f"Bearer {secret}"}
    body = {"model": model, "messages": HI}
    for _ in range(count):
        started = time.perf_counter()
        resp = client.post("/chat/completions", json=body, headers=headers)
        if resp.status_code == 200:
            out.append(time.perf_counter() - started)
    return out


class _Writer:
    """Creates keys through the admin API at ``rate`` per second, from a few threads (one admin
    call takes tens of milliseconds on a loaded machine), until stopped."""

    THREADS = 4

    def __init__(self, admin_url: str, token: str, workspace: str, member: str, rate: float) -> None:
        self.admin_url, self.token, self.workspace, self.member = admin_url, token, workspace, member
        self.interval = self.THREADS / rate
        self.counts = [0] * self.THREADS
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.THREADS)
        ]

    @property
    def count(self) -> int:
        return sum(self.counts)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def _run(self, index: int) -> None:
        admin = AdminClient(self.admin_url, self.token, timeout=30)
        next_at = time.perf_counter() + index * self.interval / self.THREADS
        while not self.stopping.is_set():
            time.sleep(max(0.0, next_at - time.perf_counter()))
            next_at += self.interval
            admin.key(self.workspace, self.member, name="steady")
            self.counts[index] += 1
        admin.close()


class _Probe(threading.Thread):
    """Sequential GET /v1/models through the gateway: any stall of ext_proc shows in its latencies."""

    def __init__(self, base_url: str, secret: str) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=base_url, timeout=10)
        self.secret = secret
        self.latencies: list[float] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            started = time.perf_counter()
            if _status(self.client, self.secret) == 200:
                self.latencies.append(time.perf_counter() - started)
            time.sleep(0.002)


def run(args: argparse.Namespace) -> Results:
    results = Results()
    token = "bench-" + secrets.token_hex(8)
    sim_key = "sk-sim-" + secrets.token_hex(8)
    with (
        _database() as url,
        tempfile.TemporaryDirectory(prefix="infery-scale-") as run_dir,
        SimulatorProcess("openai", api_key=sim_key) as sim,
    ):
        stack = Stack(
            Path(run_dir),
            Ports.free(2),
            env={
                "INFERY_ADMIN_TOKEN": token,
                "INFERY_DATABASE_URL": url,
                "INFERY_LOG_LEVEL": "WARNING",
                # Two ext_procs share limits and idempotency through Redis (refused without it).
                "INFERY_REDIS_URL": REDIS_URL,
            },
            envoy_concurrency=1,
        )
        stack.start()
        engine, sessions = open_store(url)
        admin = AdminClient(stack.admin_url, token, timeout=30)
        gateway = httpx.Client(base_url=stack.base_url, timeout=30)
        try:
            admin.provider("sim", "openai", sim.base_url, sim_key)
            prices = {"input_per_mtok": "1", "output_per_mtok": "2"}
            admin.model("plain", "sim", "gpt-4o-mini", prices)
            admin.model("fallback", "sim", "gpt-4o-mini", prices)
            admin.workspace("bench")
            member = admin.member("bench", "bench@example.com")["id"]
            probe_key = admin.key("bench", member)["key"]
            _until(lambda: _status(gateway, probe_key) == 200)
            with sessions() as session:
                workspace_id = session.exec(select(Workspace.id).where(col(Workspace.name) == "bench")).one()
            _bulk(args, results, stack, sessions, gateway, workspace_id, member)
            sample = results.raw.pop("sample")
            _steady(args, results, stack, admin, gateway, member, probe_key, sample)
            _chains(args, results, stack, admin, gateway, probe_key)
            slow = [
                (float(cpu), float(wall), int(count), kind)
                for n, p in stack.processes.items()
                if n.startswith("ext_proc")
                for count, kind, wall, cpu in SLOW_APPLY.findall(p.log())
            ]
            worst = max(slow, default=None)
            results.add(
                "ext_proc: responses that took > 10 ms to apply (logged); the most CPU: CPU / wall",
                f"{len(slow)}; "
                + (f"{worst[0]:.1f} / {worst[1]:.1f} ms ({worst[2]} {worst[3]})" if worst else "none"),
                "0 (wall time includes waiting for a CPU on a loaded machine)",
            )
            results.raw["slow_applies_ms"] = slow
        finally:
            gateway.close()
            admin.close()
            engine.dispose()
            stack.stop()
    return results


def _bulk(args, results, stack, sessions, gateway, workspace_id, member) -> None:  # type: ignore[no-untyped-def]
    roles = {"control plane": _pids(stack, "control_plane"), "ext_proc (each)": _pids(stack, "ext_proc")[:1]}
    before = {role: rss_mb(pids) for role, pids in roles.items()}
    envoy_before = rss_mb(_pids(stack, "envoy"))
    started = time.perf_counter()
    created: list[tuple[str, str]] = []
    for start in range(0, args.keys, BULK_PER_TRANSACTION):
        created += create_keys(sessions, workspace_id, member, min(BULK_PER_TRANSACTION, args.keys - start))
    stored = time.perf_counter() - started
    last = created[-1][1]
    in_force = _until(lambda: _status(gateway, last) == 200, timeout=300)
    results.add(
        f"bulk load: {args.keys:,} keys stored (store, {BULK_PER_TRANSACTION:,}/transaction)",
        f"{stored:.1f} s",
    )
    results.add("bulk load: last key in force on every ext_proc after the last commit", _ms(in_force))
    time.sleep(2)
    for role, pids in roles.items():
        per_key = (rss_mb(pids) - before[role]) * 1024 * 1024 / args.keys
        results.add(f"memory per key: {role}", f"{per_key:.0f} B")
    envoy_delta = (rss_mb(_pids(stack, "envoy")) - envoy_before) * 1024 * 1024 / args.keys
    results.add("memory per key: Envoy (keys never reach it)", f"{envoy_delta:.0f} B")
    results.raw["sample"] = created[:: max(1, len(created) // 100)]
    name = next(n for n in stack.processes if n.startswith("ext_proc"))
    stack.stop_process(name)
    started = time.perf_counter()
    stack.start_ext_proc(int(name.removeprefix("ext_proc_")))  # returns at its ready line
    ready = time.perf_counter() - started
    works = _status(gateway, created[len(created) // 3][1]) == 200
    results.add(
        f"restarted ext_proc: ready with all {args.keys:,} keys (process start included)",
        f"{ready:.1f} s" + ("" if works else " (a key created before did NOT work)"),
    )


def _steady(args, results, stack, admin, gateway, member, probe_key, sample) -> None:  # type: ignore[no-untyped-def]
    cp = _pids(stack, "control_plane")
    token = admin.http.headers["authorization"].removeprefix("Bearer ")
    writer = _Writer(stack.admin_url, token, "bench", member, args.write_rate)
    probe = _Probe(stack.base_url, probe_key)
    cpu0 = sum(cpu_seconds(p) for p in cp)
    wall0 = time.perf_counter()
    writer.start()
    probe.start()
    revoke_s: list[float] = []
    create_s: list[float] = []
    changes = 0
    try:
        for i in range(args.trials):
            time.sleep(1)
            key_id, secret = sample[i]
            admin.call("DELETE", f"/workspaces/bench/keys/{key_id}")
            revoke_s.append(_until(lambda s=secret: _status(gateway, s) == 401))
            new = admin.key("bench", member, name="trial")["key"]
            create_s.append(_until(lambda s=new: _status(gateway, s) == 200))
            changes += 2
        while time.perf_counter() - wall0 < args.write_seconds:
            time.sleep(0.5)
    finally:
        probe.stopping.set()
        writer.join()
        probe.join()
    wall = time.perf_counter() - wall0
    cpu = sum(cpu_seconds(p) for p in cp) - cpu0
    changes += writer.count
    results.add(
        "steady writes: keys created through the admin API",
        f"{writer.count} in {wall:.0f} s ({writer.count / wall:.1f}/s)",
        f"{args.write_rate:.0f}/s",
    )
    results.add(
        "revocation → 401 on every ext_proc, during the writes (median / max)",
        f"{_ms(statistics.median(revoke_s))} / {_ms(max(revoke_s))}",
        "< 1 s",
    )
    results.add(
        "new key → works on every ext_proc, during the writes (median / max)",
        f"{_ms(statistics.median(create_s))} / {_ms(max(create_s))}",
        "< 1 s",
    )
    results.add(
        "control-plane CPU per change (admin API + store + publish)",
        f"{cpu / changes * 1000:.1f} ms",
        "< 50 ms",
    )
    lat = probe.latencies
    results.add(
        "probe GET /v1/models during the writes: p50 / p99 / max",
        f"{_pct(lat, 0.5) * 1000:.1f} / {_pct(lat, 0.99) * 1000:.1f} / {max(lat) * 1000:.1f} ms"
        f" ({len(lat)} requests)",
        "max - p50 < 10 ms (2 shared cores: noisy)",
    )
    results.raw["steady"] = {"revoke_s": revoke_s, "create_s": create_s, "writes": writer.count, "cpu_s": cpu}


def _chains(args, results, stack, admin, gateway, probe_key) -> None:  # type: ignore[no-untyped-def]
    cp = _pids(stack, "control_plane")
    admin.model("chain-0", "sim", "gpt-4o-mini", {"input_per_mtok": "1", "output_per_mtok": "2"})
    admin.call("PUT", "/routes/chain-0", {"fallbacks": ["fallback"]})
    _until(lambda: bool(_latencies(gateway, probe_key, "chain-0", 1)))
    _latencies(gateway, probe_key, "plain", 50)  # warm up
    one = _latencies(gateway, probe_key, "plain", args.requests)
    cpu0 = sum(cpu_seconds(p) for p in cp)
    for i in range(1, args.chains):
        admin.model(f"chain-{i}", "sim", "gpt-4o-mini", {"input_per_mtok": "1", "output_per_mtok": "2"})
        admin.call("PUT", f"/routes/chain-{i}", {"fallbacks": ["fallback"]})
    in_force = _until(
        lambda: bool(_latencies(gateway, probe_key, f"chain-{args.chains - 1}", 1)), timeout=120
    )
    cpu = sum(cpu_seconds(p) for p in cp) - cpu0
    time.sleep(1)
    _latencies(gateway, probe_key, "plain", 50)
    many = _latencies(gateway, probe_key, "plain", args.requests)
    writes = 2 * (args.chains - 1)
    results.add(
        f"{args.chains:,} models with chains: last chain in force after the last write",
        _ms(in_force),
        "< 1 s",
    )
    results.add("chains: control-plane CPU per change", f"{cpu / writes * 1000:.1f} ms", "< 50 ms")
    results.add(
        "model without a chain, p50 / p99: 1 chain configured",
        f"{_pct(one, 0.5) * 1000:.2f} / {_pct(one, 0.99) * 1000:.2f} ms",
    )
    results.add(
        f"model without a chain, p50 / p99: {args.chains:,} chains configured",
        f"{_pct(many, 0.5) * 1000:.2f} / {_pct(many, 0.99) * 1000:.2f} ms",
        "same as with 1",
    )


def write(results: Results, args: argparse.Namespace) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Scale bench ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"`make bench-scale ARGS='--keys {args.keys} --chains {args.chains}'`; {os.cpu_count()} CPUs.",
        "",
        "| measure | value | target |",
        "| --- | --- | --- |",
        *(f"| {m} | {v} | {t} |" for m, v, t in results.rows),
        "",
    ]
    path = RESULTS / "scale.md"
    path.write_text("\n".join(lines))
    (RESULTS / "scale.json").write_text(json.dumps({"rows": results.rows, **results.raw}, indent=1))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale")
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--write-rate", type=float, default=50.0)
    parser.add_argument("--write-seconds", type=float, default=60.0)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--chains", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args(argv)
    results = run(args)
    print(f"wrote {write(results, args)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
