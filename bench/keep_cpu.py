"""CPU per kept response of the control plane's ResponseStore, in process: ``python -m bench.keep_cpu``.

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

It uses nothing but :class:`control_plane.response_store.ResponseStoreService` and the store's
migration, so the same code measures another checkout's store::

    PYTHONPATH=/work/main .venv/bin/python bench/keep_cpu.py

For instructions instead of seconds (a shared machine's CPU time is noisy), run it under
callgrind at two sizes and take the difference, so that start-up cancels out::

    PYTHONHASHSEED=1 valgrind --tool=callgrind --callgrind-out-file=/tmp/k1 \\
        .venv/bin/python bench/keep_cpu.py --keeps 400 --runs 1 --warmup 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, cast

import grpc
import psycopg
import sqlalchemy as sa
from infery_proto.v1 import responses_pb2

from bench.usage_scale import database
from control_plane.response_store import DAY_S, ResponseStoreService
from control_plane.store import db


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


async def _keep_all(
    service: ResponseStoreService, answers: list[responses_pb2.StoredResponse], c: int, think_s: float
) -> None:
    context = cast(grpc.aio.ServicerContext, _Context())
    pending = iter(answers)
    pauses = random.Random(1)

    async def caller() -> None:
        for request in pending:
            if think_s:
                await asyncio.sleep(pauses.uniform(0, 2 * think_s))
            await service.Keep(request, context)

    await asyncio.gather(*(caller() for _ in range(c)))


def one_run(url: str, keeps: int, concurrency: int, warmup: int, think_s: float) -> dict[str, float]:
    """Per keep: this process's CPU, the database server's, and the wall time (µs)."""
    db.migrate(url)
    engine = db.create_engine(url)
    try:
        service = ResponseStoreService(db.session_factory(engine), 30 * DAY_S)
        answers = [answer(f"resp_{uuid.uuid4().hex}") for _ in range(warmup + keeps)]

        async def main() -> dict[str, float]:
            await _keep_all(service, answers[:warmup], concurrency, think_s)  # opens the pool's connections
            pids = _backend_pids(engine)
            batches = getattr(service, "keep_batches", 0)
            own, server, wall = time.process_time(), _proc_cpu(pids), time.perf_counter()
            await _keep_all(service, answers[warmup:], concurrency, think_s)
            wall = time.perf_counter() - wall
            own = time.process_time() - own
            server = _proc_cpu(pids | _backend_pids(engine)) - server
            batches = getattr(service, "keep_batches", 0) - batches
            return {
                "own_us": own / keeps * 1e6,
                "database_us": server / keeps * 1e6,
                "wall_us": wall / keeps * 1e6,
                "keeps_per_transaction": keeps / batches if batches else 1.0,
            }

        result = asyncio.run(main())
        with engine.connect() as connection:
            kept = connection.exec_driver_sql("SELECT COUNT(*) FROM stored_responses").scalar()
        if kept != warmup + keeps:
            raise RuntimeError(f"kept {kept} of {warmup + keeps}")
        return result
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
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
    results: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.runs):
            with database(args.backend, Path(work), prefix="keep") as url:
                think_s = args.think_ms / 1000
                results.append(one_run(url, args.keeps, args.concurrency, args.warmup, think_s))
    best = min(results, key=lambda r: r["own_us"] + r["database_us"])
    summary: dict[str, Any] = {
        "backend": args.backend,
        "keeps": args.keeps,
        "concurrency": args.concurrency,
        "think_ms": args.think_ms,
        "answer_bytes": answer("resp_" + "0" * 32).ByteSize(),
        "best": {k: round(v, 1) for k, v in best.items()},
        "median_cpu_us": round(statistics.median(r["own_us"] + r["database_us"] for r in results), 1),
        "runs_cpu_us": [round(r["own_us"] + r["database_us"], 1) for r in results],
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
