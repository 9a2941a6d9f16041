"""``make bench-scale`` (usage part): ``GET /admin/v1/usage`` over 30 days at 10^6 and 10^7 records.

For each database (SQLite, PostgreSQL) and each size:

1. generate: the records are written by the database itself (one ``INSERT ... SELECT`` per
   million rows from a number series) into the real ``usage_records`` table at migration
   0008_files_usage, the schema before rollups; then the real migration to head runs, whose backfill builds
   the rollups from them (its time is a row: what upgrading a store of that size costs);
2. query: the admin API (``create_app`` under Starlette's TestClient, in process: routing,
   validation and serialisation included, no network) answers report shapes over the 30 days,
   ``--repeats`` times each: p50 / p99; the records-only answer (``rollups=False``) is timed
   too, fewer times, as the before;
3. storage: bytes per record of the records with their indexes, and of the rollups.

Separately, ``--ingest`` measures the CPU per stored record of the ingestion path
(``usage.store`` + commit, as ``UsageService`` runs it) in batches of 1 and of 100 on a fresh
database: this process's CPU (SQLite works inside it) plus the PostgreSQL backend's (read from
/proc). It uses nothing but ``usage.store`` and the store's migration, so the same code measures
main's ingestion (``PYTHONPATH=<main checkout> python bench/usage_scale.py --ingest-only``).

The data's shape is stated in the table: ``--workspaces`` workspaces with 10 keys each, a
member per two keys, each key using one model (a fifth of its requests a second one), a tenth
of requests to /v1/embeddings. The rollups' size, and the time of a report over all
workspaces, grow with the distinct (workspace, key, member, model, endpoint) per day, not with
the records: about 4 per key per day here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from fastapi.testclient import TestClient
from infery_proto.v1 import usage_pb2
from sqlalchemy.engine import Engine, make_url

from control_plane.resources import usage
from control_plane.store import db

RESULTS = Path(__file__).resolve().parent / "results"
POSTGRES_URL = os.environ.get("INFERY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN_TOKEN = "bench-usage-" + uuid.uuid4().hex
DAY_MS = 86_400_000
START_MS = 1_761_955_200_000  # 2025-11-01T00:00:00Z
FROM, TO = "2025-11-01", "2025-11-30"  # 30 whole days, the generated range
CHUNK = 1_000_000
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash", "o4-mini", "claude-haiku-4-5")
PRE_ROLLUPS = "0008_files_usage"  # the last revision before the rollups


@contextlib.contextmanager
def database(backend: str, work: Path, prefix: str = "usage") -> Iterator[str]:
    """A fresh database URL, removed afterwards (``prefix``: its name's, per bench)."""
    if backend == "sqlite":
        path = work / f"{prefix}-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    admin = make_url(POSTGRES_URL)
    name = f"infery_bench_{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(
        admin.set(drivername="postgresql").render_as_string(hide_password=False), autocommit=True
    ) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin.set(database=name).render_as_string(hide_password=False)
        finally:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- generation --------------------------------------------------------------------------


def _insert_select(dialect: str, first: int, last: int, count: int, keys: int) -> str:
    """Rows ``first``..``last`` of ``count``, spread evenly over 30 days (no parameters: '%' is modulo)."""
    day = (
        "strftime('%Y-%m-%d', started / 1000, 'unixepoch')"
        if dialect == "sqlite"
        else "to_char(to_timestamp(started / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    )
    numbers = (
        f"WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM n WHERE i < {last})"
        if dialect == "sqlite"
        else ""
    )
    source = "n" if dialect == "sqlite" else f"generate_series({first}::bigint, {last}::bigint) AS n(i)"
    model = "CASE (k + CASE WHEN i % 5 = 0 THEN 1 ELSE 0 END) % 6 " + " ".join(
        f"WHEN {index} THEN '{name}'" for index, name in enumerate(MODELS)
    )
    pad = "'0.' || substr('00000' || CAST(i % 997 + 1 AS TEXT), -5, 5)"
    if dialect != "sqlite":
        pad = "'0.' || lpad(CAST(i % 997 + 1 AS TEXT), 5, '0')"
    return f"""{numbers}
INSERT INTO usage_records (request_id, started_at_ms, day, workspace_id, member_id, key_id, endpoint,
  model_requested, model_used, provider, fallback_from, status, input_tokens, cached_input_tokens,
  output_tokens, reasoning_tokens, credits, credits_pico, latency_ms, ttft_ms, idempotent_replay, stream,
  error_code, usage_estimated, usage_rejected, characters, audio_ms)
SELECT 'req-0b5d6e1c-4f7a-4b8e-' || CAST(1000000000000 + i AS TEXT), started, {day},
  'ws-' || CAST(k / 10 AS TEXT), 'member-' || CAST(k / 2 AS TEXT), 'key-' || CAST(k AS TEXT),
  CASE WHEN i % 10 = 3 THEN '/v1/embeddings' ELSE '/v1/chat/completions' END,
  model, model, 'openai', '', 200, 200 + i % 800, (i % 4) * 50, 50 + i % 300, 0,
  {pad}, (i % 997 + 1) * 10000000, 100.0 + i % 50, 0.0, FALSE, FALSE, '', FALSE, '', 0, 0
FROM (SELECT i, started, k, {model} END AS model
      FROM (SELECT i, {START_MS} + i * {30 * DAY_MS} / {count} AS started, (i * 7919) % {keys} AS k
            FROM {source}) AS h) AS g"""


def generate(url: str, count: int, workspaces: int, log: Callable[[str], None]) -> dict[str, float]:
    """``count`` records through the schema before rollups, then the real upgrade; seconds of each."""
    config = db.alembic_config(url)
    engine = db.create_engine(url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, PRE_ROLLUPS)
        started = time.perf_counter()
        for first in range(0, count, CHUNK):
            last = min(count, first + CHUNK) - 1
            with engine.begin() as connection:
                sql = _insert_select(engine.dialect.name, first, last, count, workspaces * 10)
                # psycopg reads '%' as a placeholder even without parameters: doubled, it is modulo.
                connection.exec_driver_sql(sql if engine.dialect.name == "sqlite" else sql.replace("%", "%%"))
            log(f"  {min(count, first + CHUNK):,} of {count:,} records")
        inserted = time.perf_counter() - started
        started = time.perf_counter()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        backfill = time.perf_counter() - started
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.exec_driver_sql("VACUUM ANALYZE")
        else:
            with engine.begin() as connection:
                connection.exec_driver_sql("ANALYZE")
        return {"insert_s": inserted, "backfill_s": backfill}
    finally:
        engine.dispose()


# --- queries -----------------------------------------------------------------------------

SHAPES: list[tuple[str, dict[str, str]]] = [
    ("one workspace, total", {"workspace": "ws-7"}),
    ("one workspace, by model", {"workspace": "ws-7", "group_by": "model"}),
    ("one workspace, by day", {"workspace": "ws-7", "group_by": "day"}),
    ("one workspace, by key, datetime bounds off the hour", {"workspace": "ws-7", "group_by": "key"}),
    ("all workspaces, total", {}),
    ("all workspaces, by model", {"group_by": "model"}),
    ("all workspaces, by day", {"group_by": "day"}),
    ("all workspaces, by key", {"group_by": "key"}),
]
RECORDS_ONLY = ("one workspace, total", "all workspaces, total")


def _params(name: str, filters: dict[str, str]) -> dict[str, str]:
    if "datetime" in name:
        return {**filters, "from": f"{FROM}T06:17:00Z", "to": f"{TO}T18:42:31Z"}
    return {**filters, "from": FROM, "to": TO}


def query_times(url: str, repeats: int, records_repeats: int) -> dict[str, dict[str, float]]:
    """p50 / p99 ms of each shape through the admin API, and of the records-only answer."""
    from control_plane.api import create_app
    from control_plane.settings import Settings

    engine = db.create_engine(url)
    factory = db.session_factory(engine)
    out: dict[str, dict[str, float]] = {}
    try:
        app = create_app(Settings(database_url=url, admin_token=ADMIN_TOKEN), factory)
        with TestClient(app, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
            for name, filters in SHAPES:
                params = _params(name, filters)
                samples = []
                for _ in range(repeats + 1):  # the first warms the caches and is not counted
                    started = time.perf_counter()
                    response = client.get("/admin/v1/usage", params=params)
                    samples.append(time.perf_counter() - started)
                    if response.status_code != 200 or not response.json()["rows"]:
                        raise RuntimeError(f"{name}: {response.status_code} {response.text[:300]}")
                out[name] = _summary(samples[1:])
        for name, filters in SHAPES:
            if name not in RECORDS_ONLY:
                continue
            query = usage.UsageQuery(
                workspace=filters.get("workspace"), group_by=filters.get("group_by"), start=FROM, end=TO
            )
            samples = []
            for _ in range(records_repeats):
                with factory() as session:
                    started = time.perf_counter()
                    usage.report(session, query, rollups=False)
                    samples.append(time.perf_counter() - started)
            out[f"{name} (records only, no rollups)"] = _summary(samples)
    finally:
        engine.dispose()
    return out


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
        "n": len(ordered),
    }


def storage(url: str, count: int) -> dict[str, float]:
    """Bytes per record: the records with their indexes, the rollups with theirs."""
    engine = db.create_engine(url)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                sizes = dict(
                    connection.exec_driver_sql(
                        "SELECT CASE WHEN name LIKE '%usage_rollups%' THEN 'rollups'"
                        " WHEN name LIKE '%usage_records%' THEN 'records' ELSE 'other' END, SUM(pgsize)"
                        " FROM dbstat GROUP BY 1"
                    ).all()
                )
            else:
                sizes = {
                    table: connection.exec_driver_sql(
                        f"SELECT pg_total_relation_size('usage_{table}')"
                    ).scalar()
                    for table in ("records", "rollups")
                }
            rollup_rows = connection.exec_driver_sql("SELECT COUNT(*) FROM usage_rollups").scalar() or 0
    finally:
        engine.dispose()
    return {
        "records_bytes_per_record": (sizes.get("records") or 0) / count,
        "rollups_bytes_per_record": (sizes.get("rollups") or 0) / count,
        "rollup_rows": float(rollup_rows),
    }


# --- ingestion CPU -----------------------------------------------------------------------


def _records(count: int, workspaces: int, tag: str) -> list[usage_pb2.UsageRecord]:
    now = int(time.time() * 1000)
    out = []
    for i in range(count):
        k = (i * 7919) % (workspaces * 10)
        out.append(
            usage_pb2.UsageRecord(
                request_id=f"req-{tag}-{i:012d}",
                started_at_ms=now - (count - i) * 37,
                workspace_id=f"ws-{k // 10}",
                member_id=f"member-{k // 2}",
                key_id=f"key-{k}",
                endpoint="/v1/embeddings" if i % 10 == 3 else "/v1/chat/completions",
                model_requested=MODELS[k % 6],
                model_used=MODELS[(k + (i % 5 == 0)) % 6],
                provider="openai",
                status=200,
                input_tokens=200 + i % 800,
                cached_input_tokens=(i % 4) * 50,
                output_tokens=50 + i % 300,
                credits=f"0.{i % 997 + 1:05d}",
                latency_ms=100.0 + i % 50,
            )
        )
    return out


def _backend_pid(engine: Engine) -> int | None:
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as connection:
        return int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() or 0)


def _proc_cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ingest_cpu(url: str, count: int, batch: int, workspaces: int) -> dict[str, float]:
    """µs of CPU per record stored: this process, and the PostgreSQL backend (one pooled connection)."""
    db.migrate(url)
    engine = db.create_engine(url)
    if engine.dialect.name == "postgresql":
        engine.dispose()
        engine = db.sa.create_engine(db.normalize_url(url), pool_size=1, max_overflow=0)
    try:
        factory = db.session_factory(engine)
        records = _records(count, workspaces, uuid.uuid4().hex[:8])
        backend = _backend_pid(engine)
        own, server = time.process_time(), _proc_cpu(backend)
        stored = 0
        for first in range(0, count, batch):
            with factory() as session:
                stored += usage.store(session, records[first : first + batch])[0]
                session.commit()
        own, server = time.process_time() - own, _proc_cpu(backend) - server
        if stored != count:
            raise RuntimeError(f"stored {stored} of {count}")
    finally:
        engine.dispose()
    return {"own_us": own / count * 1e6, "database_us": server / count * 1e6}


# --- the run -----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results: dict[str, Any] = {"args": vars(args), "load_average_before": os.getloadavg()[0], "ingest": {}}
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.gettempdir())
    work.mkdir(parents=True, exist_ok=True)
    for backend in args.backends:
        for batch in (1, 100):
            with database(backend, work) as url:
                count = args.ingest_records if batch > 1 else args.ingest_records // 10
                log(f"{backend}: ingestion CPU, {count:,} records in batches of {batch}")
                results["ingest"][f"{backend}, batches of {batch}"] = ingest_cpu(
                    url, count, batch, args.workspaces
                )
    if args.ingest_only:
        return results
    results["sizes"] = {}
    for backend in args.backends:
        for count in args.records:
            with database(backend, work) as url:
                log(f"{backend}: generating {count:,} records")
                row: dict[str, Any] = generate(url, count, args.workspaces, log)
                log(f"{backend}: querying {count:,} records")
                row["queries"] = query_times(url, args.repeats, args.records_repeats)
                row.update(storage(url, count))
                results["sizes"][f"{backend}, {count:,} records"] = row
                log(f"{backend}, {count:,} records: {json.dumps(row)}")
                write(results, args.name)  # an interrupted run keeps every size it finished
    return results


def write(results: dict[str, Any], name: str) -> Path:
    args = results["args"]
    lines = [
        f"# Usage analytics at scale ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"`python -m bench.usage_scale {' '.join(sys.argv[1:])}`; {os.cpu_count()} CPUs; load average (1 min)"
        f" before / after: {results['load_average_before']:.2f} / {os.getloadavg()[0]:.2f}. Data: 30 days,"
        f" {args['workspaces']} workspaces x 10 keys, 6 models, 2 endpoints (see bench/usage_scale.py).",
        "",
        "## Ingestion CPU per stored record (usage.store + commit)",
        "",
        "| database, batch | this process µs | database server µs |",
        "| --- | ---: | ---: |",
        *(f"| {k} | {v['own_us']:.1f} | {v['database_us']:.1f} |" for k, v in results["ingest"].items()),
        "",
    ]
    if results.get("sizes"):
        lines += [
            "## GET /admin/v1/usage over 30 days (from 2025-11-01 to 2025-11-30)",
            "",
            "| database, records | report | p50 ms | p99 ms | n |",
            "| --- | --- | ---: | ---: | ---: |",
        ]
        for size, row in results["sizes"].items():
            for shape, q in row["queries"].items():
                lines.append(f"| {size} | {shape} | {q['p50_ms']:.1f} | {q['p99_ms']:.1f} | {q['n']} |")
        lines += [
            "",
            "| database, records | insert s | migration backfill s | records B/record | rollups B/record"
            " | rollup rows |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            *(
                f"| {size} | {r['insert_s']:.0f} | {r['backfill_s']:.1f}"
                f" | {r['records_bytes_per_record']:.0f} | {r['rollups_bytes_per_record']:.1f}"
                f" | {r['rollup_rows']:,.0f} |"
                for size, r in results["sizes"].items()
            ),
            "",
        ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(lines))
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=1))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.usage_scale", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--records", type=lambda s: [int(float(x)) for x in s.split(",")], default=[10**6, 10**7]
    )
    parser.add_argument("--backends", type=lambda s: s.split(","), default=["sqlite", "postgresql"])
    parser.add_argument("--workspaces", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=30, help="timed answers per report shape")
    parser.add_argument("--records-repeats", type=int, default=3, help="timed records-only answers")
    parser.add_argument("--ingest-records", type=int, default=20_000)
    parser.add_argument(
        "--ingest-only", action="store_true", help="only the ingestion CPU (runs on main too)"
    )
    parser.add_argument("--work-dir", default="", help="where SQLite files go (default: the temp dir)")
    parser.add_argument("--name", default="usage_scale", help="bench/results/<name>.md and .json")
    args = parser.parse_args(argv)
    print(f"wrote {write(run(args), args.name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
