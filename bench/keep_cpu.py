"""CPU per kept response of the control plane's ResponseStore: ``python -m bench.keep_cpu``.

The Responses API keeps every answer (``store`` is OpenAI's default), so ``infery.v1.ResponseStore/
Keep`` runs once per request, and the control plane's CPU per request in ``make bench``'s Responses
rows is mostly this. Here the servicer's ``Keep`` is awaited directly (no gRPC framing, which does
not change with the store) by ``--concurrency`` callers at once, as ext_proc's concurrent answers
call it, with a realistic answer (a ~1.3 KB response object, ~0.4 KB of input items) and distinct
ids, on a fresh migrated database: back to back (a closed loop, every caller's next keep arriving
as soon as its last is acked, so keeps arrive together), or with ``--think-ms`` each caller pausing
0 to twice that before each keep, as a request's own time does, so that keeps arrive spread out as
a gateway's do (the pauses' timers cost this process some CPU too: ~60 µs per keep at 15 ms).
Reported per keep: this process's CPU (``time.process_time``, worker threads and SQLite
included), the PostgreSQL backends' CPU (read from /proc, the local server only), the wall time,
and how many keeps each database transaction carried where the service counts its transactions.

``--via grpc`` measures the whole way instead: ext_proc's client
(:class:`ext_proc.response_store.ResponseStore`, its batching and gRPC framing) in this process,
the control plane's servicer behind a real gRPC server in a process of its own (started here,
on a free loopback port), so each side's CPU is its own: this process's is ext_proc's per keep
(``own_us``), the server process's the control plane's (``control_plane_us``, from /proc), and
``keeps_per_call`` how many keeps each gRPC call carried.

It uses nothing but :class:`control_plane.response_store.ResponseStoreService` (and, with
``--via grpc``, ext_proc's client) and the store's migration, so the same code measures another
checkout's store (the server process imports what this one does)::

    PYTHONPATH=/work/main:/work/main/proto .venv/bin/python bench/keep_cpu.py --via grpc

For instructions instead of seconds (a shared machine's CPU time is noisy), run it under
callgrind at two sizes and take the difference, so that start-up cancels out::

    PYTHONHASHSEED=1 valgrind --tool=callgrind --callgrind-out-file=/tmp/k1 \\
        .venv/bin/python bench/keep_cpu.py --keeps 400 --runs 1 --warmup 32
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import psycopg
import sqlalchemy as sa
from infery_proto.v1 import responses_pb2

from bench.usage_scale import database
from control_plane.response_store import DAY_S, ResponseStoreService, add_response_store
from control_plane.store import db
from control_plane.xds.server import SERVER_OPTIONS
from ext_proc.response_store import ResponseStore


class _Context:
    """What ``Keep`` uses of a servicer context: ``abort`` (which must raise)."""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise RuntimeError(f"Keep aborted: {code.name}: {details}")


def answer(response_id: str) -> responses_pb2.StoredResponse:
    """A realistic kept answer: a Responses API response object with usage, and its input items."""
    text = (
        "Envoy hands each request to the ext_proc service, which picks the provider, rewrites the "
        "body when the provider speaks another API, and counts the tokens it answers. "
    ) * 5
    response = {
        "id": response_id,
        "object": "response",
        "created_at": 1_800_000_000,
        "status": "completed",
        "model": "claude-sonnet-4-5",
        "output": [
            {
                "id": "msg_" + response_id[5:],
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "store": True,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": {
            "input_tokens": 61,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 180,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 241,
        },
        "metadata": {},
    }
    items = [
        {
            "id": "msg_in_" + response_id[5:],
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Explain what the gateway does with a request. " * 6}],
        }
    ]
    return responses_pb2.StoredResponse(
        workspace_id="ws-bench",
        id=response_id,
        model="claude-sonnet-4-5",
        created_at=1_800_000_000,
        response=json.dumps(response).encode(),
        input_items=json.dumps(items).encode(),
    )


def _backend_pids(engine: sa.Engine) -> set[int]:
    """The PostgreSQL backends of the engine's database, asked on a connection of its own (one of
    the engine's pool would leave out the backend it is)."""
    if engine.dialect.name != "postgresql":
        return set()
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return {int(pid) for (pid,) in rows}


def _proc_cpu(pids: set[int]) -> float:
    """CPU seconds of these processes so far (a process that has gone counts nothing)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


Keep = Callable[[responses_pb2.StoredResponse], Awaitable[None]]


async def _keep_all(keep: Keep, answers: list[responses_pb2.StoredResponse], c: int, think_s: float) -> None:
    pending = iter(answers)
    pauses = random.Random(1)

    async def caller() -> None:
        for request in pending:
            if think_s:
                await asyncio.sleep(pauses.uniform(0, 2 * think_s))
            await keep(request)

    await asyncio.gather(*(caller() for _ in range(c)))


class _Side:
    """The control plane as the measured keeps reach it: ``keep`` (one answer), the processes
    whose CPU is its own (none when it runs in this one), its transactions so far, and this
    process's gRPC calls so far (None: it makes none, or cannot count them)."""

    def __init__(
        self,
        keep: Keep,
        pids: set[int],
        transactions: Callable[[], int],
        calls: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.keep, self.pids, self.transactions, self.calls = keep, pids, transactions, calls


@contextlib.contextmanager
def _in_process(engine: sa.Engine) -> Iterator[_Side]:
    """The servicer's Keep awaited here: no gRPC, no other process."""
    service = ResponseStoreService(db.session_factory(engine), 30 * DAY_S)
    context = cast(grpc.aio.ServicerContext, _Context())

    async def keep(request: responses_pb2.StoredResponse) -> None:
        await service.Keep(request, context)

    yield _Side(keep, set(), lambda: getattr(service, "keep_batches", 0))


@contextlib.contextmanager
def _over_grpc(url: str) -> Iterator[_Side]:
    """ext_proc's client here, the control plane's service in a server process of its own (this
    process's modules: its PYTHONPATH is this one's sys.path), asked its transactions on stdin."""
    code = "import runpy, sys; sys.argv[:] = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}  # "": the cwd
    server = subprocess.Popen(
        [sys.executable, "-c", code, os.path.abspath(__file__), "--serve", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd="/",  # a -c program's sys.path starts with the working directory: none of the checkouts
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    stdin, stdout = server.stdin, server.stdout
    try:
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the store's server process exited ({server.wait(10)}) before it listened")
        port = int(line)
        store = ResponseStore(f"127.0.0.1:{port}")

        async def keep(r: responses_pb2.StoredResponse) -> None:
            if not await store.keep(r.workspace_id, r.id, r.model, r.created_at, r.response, r.input_items):
                raise RuntimeError(f"{r.id} was not kept")

        def transactions() -> int:
            stdin.write("\n")
            stdin.flush()
            return int(stdout.readline())

        yield _Side(keep, {server.pid}, transactions, lambda: getattr(store, "keep_rpcs", None))
    finally:
        stdin.close()
        server.wait(10)


def serve(url: str) -> int:
    """The server process of ``--via grpc``: the store's service on a free loopback port (printed),
    its transaction count printed for each line read, until stdin closes."""

    async def main() -> None:
        engine = db.create_engine(url)
        service = ResponseStoreService(db.session_factory(engine), 30 * DAY_S)
        server = grpc.aio.server(options=SERVER_OPTIONS)
        add_response_store(server, service)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(port, flush=True)
        while await asyncio.to_thread(sys.stdin.readline):
            print(getattr(service, "keep_batches", 0), flush=True)
        await server.stop(grace=1)
        engine.dispose()

    asyncio.run(main())
    return 0


def one_run(
    url: str, keeps: int, concurrency: int, warmup: int, think_s: float, via: str = "servicer"
) -> dict[str, float]:
    """Per keep: this process's CPU, the control plane's (``--via grpc``: its own process's), the
    database server's, and the wall time (µs)."""
    db.migrate(url)
    engine = db.create_engine(url)
    try:
        answers = [answer(f"resp_{uuid.uuid4().hex}") for _ in range(warmup + keeps)]
        with _over_grpc(url) if via == "grpc" else _in_process(engine) as side:

            async def main() -> dict[str, float]:
                await _keep_all(side.keep, answers[:warmup], concurrency, think_s)  # opens the connections
                pids = _backend_pids(engine)
                batches, calls = side.transactions(), side.calls()
                own, server, wall = time.process_time(), _proc_cpu(pids), time.perf_counter()
                control_plane = _proc_cpu(side.pids)
                await _keep_all(side.keep, answers[warmup:], concurrency, think_s)
                wall = time.perf_counter() - wall
                own = time.process_time() - own
                control_plane = _proc_cpu(side.pids) - control_plane
                server = _proc_cpu(pids | _backend_pids(engine)) - server
                batches = side.transactions() - batches
                after = side.calls()
                return {
                    "own_us": own / keeps * 1e6,
                    "control_plane_us": control_plane / keeps * 1e6,
                    "database_us": server / keeps * 1e6,
                    "wall_us": wall / keeps * 1e6,
                    "keeps_per_transaction": keeps / batches if batches else 1.0,
                    "keeps_per_call": keeps / (after - calls)
                    if after is not None and calls is not None
                    else 1.0,
                }

            result = asyncio.run(main())
        with engine.connect() as connection:
            kept = connection.exec_driver_sql("SELECT COUNT(*) FROM stored_responses").scalar()
        if kept != warmup + keeps:
            raise RuntimeError(f"kept {kept} of {warmup + keeps}")
        return result
    finally:
        engine.dispose()


def _cpu(result: dict[str, float]) -> float:
    return result["own_us"] + result["control_plane_us"] + result["database_us"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--via",
        choices=("servicer", "grpc"),
        default="servicer",
        help="servicer: its Keep awaited in this process; grpc: ext_proc's client here, the servicer"
        " behind a gRPC server in a process of its own (each side's CPU reported)",
    )
    parser.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)  # --via grpc's server process
    parser.add_argument("--keeps", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="each caller pauses 0 to twice this (uniform) before each keep, as a request's own time"
        " does: keeps then arrive spread out, not all at once (0: back to back, a closed loop)",
    )
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.serve)
    results: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.runs):
            with database(args.backend, Path(work), prefix="keep") as url:
                think_s = args.think_ms / 1000
                results.append(one_run(url, args.keeps, args.concurrency, args.warmup, think_s, args.via))
    best = min(results, key=_cpu)
    summary: dict[str, Any] = {
        "backend": args.backend,
        "via": args.via,
        "keeps": args.keeps,
        "concurrency": args.concurrency,
        "think_ms": args.think_ms,
        "answer_bytes": answer("resp_" + "0" * 32).ByteSize(),
        "best": {k: round(v, 1) for k, v in best.items()},
        "median_cpu_us": round(statistics.median(_cpu(r) for r in results), 1),
        "runs_cpu_us": [round(_cpu(r), 1) for r in results],
        "runs_own_us": [round(r["own_us"], 1) for r in results],
        "runs_control_plane_us": [round(r["control_plane_us"], 1) for r in results],
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
