"""``make bench-scale``: the configuration at scale (issue 18), measured on a real gateway.

One gateway (control plane on PostgreSQL, two ext_proc processes, one Envoy) in front of the
OpenAI simulator. Phases:

1. bulk load: ``--keys`` keys created through the store (``create_keys``, 10,000 per
   transaction); time until the last one works; memory per key of each process;
2. steady writes: keys created through the admin API at ``--write-rate``/s for
   ``--write-seconds``, while revocations and creations are timed (in force = every ext_proc
   answers accordingly: ``CONSECUTIVE`` answers in a row through Envoy's round robin), a
   probe (a process of its own) measures request latency and its own wait for a CPU, Envoy's
   histogram gives the same requests as Envoy measured them, and the control plane's CPU is
   divided by the number of changes;
3. chains: the latency of a model without a chain with 1 chain configured, then ``--chains``
   chains created through the admin API, the time until the last one is in force (its primary
   is a provider nobody listens on, so only the chain answers 200), when Envoy applied its
   last CDS and RDS update, and the same latency again.

Who stalled is told by the processes themselves, not guessed from a client's percentiles:
ext_proc runs with ``INFERY_LOOP_WATCH_MS=10`` (each event-loop stall > 10 ms split into its
own CPU, GC and waiting for a CPU, ext_proc/loop_watch.py), logs slow applies and slow
collections; the control plane logs publishes slower than 100 ms with their CPU. The logs of
the last run are kept in ``bench/work/scale-logs/``.

The table goes to ``bench/results/scale.md`` (and ``scale.json``); bench/README.md explains it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import re
import secrets
import shutil
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
from infery.stack import Ports, Stack, free_port
from simulators.testing import SimulatorProcess

RESULTS = Path(__file__).resolve().parent / "results"
REDIS_URL = os.environ.get("INFERY_REDIS_URL") or "redis://127.0.0.1:6379/9"
POSTGRES_URL = os.environ.get("INFERY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
CONSECUTIVE = 4  # answers in a row that prove a change is in force on both ext_procs
BULK_PER_TRANSACTION = 10_000
HI = [{"role": "user", "content": "hi"}]
SLOW_APPLY = re.compile(r"applying (\d+) \S+\.(\w+) took ([\d.]+) ms \(([\d.]+) ms CPU")
LOOP_STALL = re.compile(
    r"event loop stalled ([\d.]+) ms: ([\d.]+) ms CPU on the loop \(([\d.]+) ms GC\),"
    r" ([\d.]+) ms waiting for a CPU"
)
SLOW_GC = re.compile(r"garbage collection of generation (\d) took ([\d.]+) ms \(([\d.]+) ms CPU\)")


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


def _thread_cpu_wait() -> float:
    """Seconds the calling thread has waited for a CPU (/proc/thread-self/schedstat)."""
    with open("/proc/thread-self/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def _probe_main(base_url: str, secret: str, started: Any, stopping: Any, out: str) -> None:
    """Sequential GET /v1/models through the gateway until ``stopping`` is set; writes
    (latency, seconds this process waited for a CPU meanwhile) per request to ``out``."""
    samples: list[tuple[float, float]] = []
    slow: list[tuple[str, float, float]] = []
    with httpx.Client(base_url=base_url, timeout=10) as client:
        _status(client, secret)  # connected: the phase may start
        started.set()
        while not stopping.is_set():
            waited = _thread_cpu_wait()
            started = time.perf_counter()
            status = _status(client, secret)
            took = time.perf_counter() - started
            waited = _thread_cpu_wait() - waited
            if status == 200:
                samples.append((took, waited))
                if took > 0.015:
                    slow.append((time.strftime("%H:%M:%S"), took * 1000, waited * 1000))
            time.sleep(0.002)
    Path(out).write_text(json.dumps({"samples": samples, "slow": slow}))


class _Probe:
    """The probe in a process of its own: in a thread of the bench it waited for the GIL behind
    the writers' threads, and those waits showed as gateway stalls."""

    def __init__(self, base_url: str, secret: str, out: Path) -> None:
        context = multiprocessing.get_context("spawn")
        self.started, self.stopping = context.Event(), context.Event()
        self.out = out
        self.process = context.Process(
            target=_probe_main, args=(base_url, secret, self.started, self.stopping, str(out))
        )
        self.latencies: list[float] = []
        self.waits: list[float] = []
        self.slow: list[tuple[str, float, float]] = []

    def start(self) -> None:
        """Start the probe and return once it is sending (a new interpreter takes seconds)."""
        self.process.start()
        if not self.started.wait(120):
            raise RuntimeError("the probe process did not start")

    def join(self) -> None:
        self.stopping.set()
        self.process.join()
        data = json.loads(self.out.read_text())
        self.latencies = [took for took, _ in data["samples"]]
        self.waits = [waited for _, waited in data["samples"]]
        self.slow = data["slow"]


def _envoy_stats(stack: Stack) -> dict[str, Any]:
    """Envoy's counters and histograms (detailed buckets, cumulative) of interest here."""
    doc = stack.envoy_admin(
        "/stats",
        format="json",
        histogram_buckets="detailed",
        filter=r"^(http\.infery\.downstream_rq_time|cluster_manager\.cds\.|http\.infery\.rds\.)",
    ).json()
    out: dict[str, Any] = {}
    for entry in doc["stats"]:
        if "histograms" in entry:
            for h in entry["histograms"].get("details", []):
                out[h["name"]] = [(b["lower_bound"], b["width"], b["count"]) for b in h.get("totals", [])]
        else:
            out[entry["name"]] = entry.get("value")
    return out


def _histogram_diff(
    before: dict[str, Any], after: dict[str, Any], name: str
) -> list[tuple[float, float, int]]:
    """The buckets of ``name`` recorded between two ``_envoy_stats`` (non-empty ones)."""
    old = {(lo, w): c for lo, w, c in before.get(name, [])}
    return [(lo, w, c - old.get((lo, w), 0)) for lo, w, c in after.get(name, []) if c > old.get((lo, w), 0)]


def run(args: argparse.Namespace) -> Results:
    results = Results()
    results.raw["load_average_before"] = os.getloadavg()[0]
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
                # ext_proc logs each event-loop stall > 10 ms, split into CPU, GC and waiting for a CPU.
                "INFERY_LOOP_WATCH_MS": "10",
            },
            envoy_concurrency=1,
            # No batches here; and at INFERY_LOG_LEVEL=WARNING a batch worker never logs the
            # "ready" line the stack waits for (an INFO record): the run stopped there.
            batch_workers=0,
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
            _ext_proc_rows(results, stack)
            logs = Path(__file__).resolve().parent / "work" / "scale-logs"  # for a post-mortem
            shutil.rmtree(logs, ignore_errors=True)
            logs.mkdir(parents=True)
            for name, process in stack.processes.items():
                (logs / f"{name}.log").write_text(process.log())
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
    probe = _Probe(stack.base_url, probe_key, Path(stack.run_dir) / "probe.json")
    probe.start()  # before the phase: a new interpreter's start is not the gateway's
    envoy0 = _envoy_stats(stack)
    cpu0 = sum(cpu_seconds(p) for p in cp)
    wall0 = time.perf_counter()
    writer.start()
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
        writer.join()
        probe.join()
    wall = time.perf_counter() - wall0
    time.sleep(5.5)  # Envoy's histograms are flushed every 5 s
    rq_time = _histogram_diff(envoy0, _envoy_stats(stack), "http.infery.downstream_rq_time")
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
    slowest = max(range(len(lat)), key=lat.__getitem__)
    results.add(
        "probe GET /v1/models during the writes: p50 / p99 / max (the probe's own wait for a CPU"
        " in the slowest)",
        f"{_pct(lat, 0.5) * 1000:.1f} / {_pct(lat, 0.99) * 1000:.1f} / {lat[slowest] * 1000:.1f} ms"
        f" ({probe.waits[slowest] * 1000:.0f} ms; {len(lat)} requests)",
        "max - p50 < 10 ms (2 shared cores: noisy)",
    )
    total = sum(c for _, _, c in rq_time)
    over = sum(c for lower, _, c in rq_time if lower >= 10)
    results.add(
        "Envoy's own measure of the requests during the writes (ext_proc included): > 10 ms; the longest",
        f"{over} of {total}; < {_bucket_pct(rq_time, 1.0):.0f} ms",
        "0",
    )
    results.raw["steady_envoy_rq_time"] = rq_time
    results.raw["probe_slow"] = probe.slow  # (time, ms, ms the probe waited for a CPU)
    results.raw["steady"] = {"revoke_s": revoke_s, "create_s": create_s, "writes": writer.count, "cpu_s": cpu}


def _chains(args, results, stack, admin, gateway, probe_key) -> None:  # type: ignore[no-untyped-def]
    cp = _pids(stack, "control_plane")
    prices = {"input_per_mtok": "1", "output_per_mtok": "2"}
    admin.model("chain-0", "sim", "gpt-4o-mini", prices)
    admin.call("PUT", "/routes/chain-0", {"fallbacks": ["fallback"]})
    _until(lambda: bool(_latencies(gateway, probe_key, "chain-0", 1)))
    _latencies(gateway, probe_key, "plain", 50)  # warm up
    one = _latencies(gateway, probe_key, "plain", args.requests)
    # The last chain's primary is a provider nobody listens on: only the chain (its fallback)
    # answers 200, so "in force" means ext_proc has the route and Envoy its cluster and route.
    admin.provider("dead", "openai", f"http://127.0.0.1:{free_port()}/v1", "sk-nobody")
    last = f"chain-{args.chains - 1}"
    cpu0 = sum(cpu_seconds(p) for p in cp)
    envoy_pids = _pids(stack, "envoy")
    envoy_cpu0 = sum(cpu_seconds(p) for p in envoy_pids)
    envoy0 = _envoy_stats(stack)
    writes_started = time.time()
    for i in range(1, args.chains):
        admin.model(f"chain-{i}", "dead" if i == args.chains - 1 else "sim", "gpt-4o-mini", prices)
        admin.call("PUT", f"/routes/chain-{i}", {"fallbacks": ["fallback"]})
    last_write = time.time()
    checks: list[tuple[float, int]] = []  # (ms after the last write, status) of each check

    def served_by_the_chain() -> bool:
        resp = gateway.post(
            "/chat/completions",
            json={"model": last, "messages": HI},
            headers={"authorization": f"Bearer {probe_key}"},
        )
        checks.append((round((time.time() - last_write) * 1000, 1), resp.status_code))
        return resp.status_code == 200 and resp.headers.get("x-fallback-from") == last

    in_force = _until(served_by_the_chain, timeout=120)
    cpu = sum(cpu_seconds(p) for p in cp) - cpu0
    # Envoy's CPU over the writes: its xDS updates, plus the few checks above (no other traffic).
    envoy_cpu = sum(cpu_seconds(p) for p in envoy_pids) - envoy_cpu0
    time.sleep(5.5)  # Envoy's histograms are flushed every 5 s
    envoy1 = _envoy_stats(stack)
    time.sleep(1)
    _latencies(gateway, probe_key, "plain", 50)
    many = _latencies(gateway, probe_key, "plain", args.requests)
    writes = 2 * (args.chains - 1)
    cds = _histogram_diff(envoy0, envoy1, "cluster_manager.cds.update_duration")
    rds = _histogram_diff(envoy0, envoy1, "http.infery.rds.infery_routes.update_duration")
    timeline = {
        "writes_s": last_write - writes_started,
        "checks": checks,
        "cds_updates": _delta(envoy0, envoy1, "cluster_manager.cds.update_success"),
        "rds_updates": _delta(envoy0, envoy1, "http.infery.rds.infery_routes.update_success"),
        "cds_applied_ms_after_last_write": envoy1["cluster_manager.cds.update_time"] - last_write * 1000,
        "rds_applied_ms_after_last_write": envoy1["http.infery.rds.infery_routes.update_time"]
        - last_write * 1000,
        "cds_update_ms": cds,
        "rds_update_ms": rds,
        "envoy_cpu_s": envoy_cpu,
    }
    results.raw["chains_timeline"] = timeline
    results.add(
        f"{args.chains:,} models with chains: last chain in force after the last write",
        _ms(in_force),
        "< 1 s",
    )
    results.add(
        "of which Envoy: last CDS / RDS update applied after the last write; updates during the writes;"
        " one update's duration, median / max",
        f"{_applied(timeline, 'cds')} / {_applied(timeline, 'rds')};"
        f" {timeline['cds_updates']} CDS, {timeline['rds_updates']} RDS in {timeline['writes_s']:.0f} s;"
        f" CDS {_durations(cds, timeline['cds_updates'])}, RDS {_durations(rds, timeline['rds_updates'])}",
    )
    updates = timeline["cds_updates"] + timeline["rds_updates"]
    results.add(
        "of which Envoy: CPU over the writes (its process, /proc); per CDS or RDS update",
        f"{envoy_cpu:.2f} s; {envoy_cpu / max(updates, 1) * 1000:.1f} ms",
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


def _ext_proc_rows(results: Results, stack: Stack) -> None:
    """What ext_proc itself says about its event loop over the whole run (both processes)."""
    logs = [p.log() for n, p in stack.processes.items() if n.startswith("ext_proc")]
    slow = [
        (float(cpu), float(wall), int(count), kind)
        for log in logs
        for count, kind, wall, cpu in SLOW_APPLY.findall(log)
    ]
    worst = max(slow, default=None)
    results.add(
        "ext_proc: responses that took > 10 ms to apply; the most CPU: CPU / wall",
        f"{len(slow)}; "
        + (f"{worst[0]:.1f} / {worst[1]:.1f} ms ({worst[2]} {worst[3]})" if worst else "none"),
        "CPU < 10 ms (wall time includes waiting for a CPU)",
    )
    stalls = [tuple(float(v) for v in m) for log in logs for m in LOOP_STALL.findall(log)]
    gcs = [(int(g), float(wall), float(cpu)) for log in logs for g, wall, cpu in SLOW_GC.findall(log)]
    own = max((s[1] for s in stalls), default=0.0)
    results.add(
        "ext_proc event loop, whole run: stalls > 10 ms; the longest; the most CPU of its own in one"
        " (of which GC); all stalls' lateness summed, and their waiting for a CPU summed",
        f"{len(stalls)}; {max((s[0] for s in stalls), default=0.0):.0f} ms; {own:.1f} ms"
        f" ({max((s[2] for s in stalls), default=0.0):.1f} ms); {sum(s[0] for s in stalls):.0f} ms late,"
        # a stall's window also holds the timer's 5 ms period: the waits can exceed the lateness
        f" {sum(s[3] for s in stalls):.0f} ms waiting for a CPU",
        "own CPU < 10 ms",
    )
    results.add(
        "ext_proc: garbage collections > 5 ms (wall); the most CPU in one",
        f"{len(gcs)}; {max((g[2] for g in gcs), default=0.0):.1f} ms",
        "< 5 ms",
    )
    results.raw["slow_applies_ms"] = slow
    results.raw["loop_stalls_ms"] = stalls  # (late, own CPU, of which GC, waiting for a CPU)
    results.raw["slow_gc_ms"] = gcs


def _delta(before: dict[str, Any], after: dict[str, Any], name: str) -> int:
    return int(after.get(name) or 0) - int(before.get(name) or 0)


def _applied(timeline: dict[str, Any], kind: str) -> str:
    """When Envoy applied its last update of ``kind`` after the last write ("none": it had none
    during the writes, e.g. RDS, which chains no longer change)."""
    if not timeline[f"{kind}_updates"]:
        return "none"
    return f"{timeline[f'{kind}_applied_ms_after_last_write']:.0f} ms"


def _durations(histogram: list[tuple[float, float, int]], updates: int) -> str:
    """One update's duration, median / max, from Envoy's histogram ("-" without updates)."""
    if not updates:
        return "-"
    return f"{_bucket_pct(histogram, 0.5):.0f} / {_bucket_pct(histogram, 1.0):.0f} ms"


def _bucket_pct(buckets: list[tuple[float, float, int]], q: float) -> float:
    """The upper bound of the bucket holding quantile ``q`` of an Envoy histogram's buckets."""
    total = sum(c for _, _, c in buckets)
    seen = 0
    for lower, width, count in buckets:
        seen += count
        if seen >= q * total:
            return lower + width
    return float("nan")


def write(results: Results, args: argparse.Namespace) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Scale bench ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"`make bench-scale ARGS='--keys {args.keys} --chains {args.chains}'`; {os.cpu_count()} CPUs;"
        f" load average (1 min) before / after: {results.raw.get('load_average_before', float('nan')):.2f}"
        f" / {os.getloadavg()[0]:.2f} (other work on the machine makes every wall-clock figure longer).",
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
