"""Usage rollups: the report read from them equals the report read from every record.

The reference is ``usage.report(..., rollups=False)``, which sums the records in the range
(what the report did before rollups existed). Data sets mix times on and beside hour and day
boundaries, batches are redelivered (a duplicate must not count twice in the rollups), and the
queries' bounds fall on and between boundaries, as dates and as datetimes.
"""

from __future__ import annotations

import random
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from cp_support import ms, record, store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from infery_proto.v1 import usage_pb2
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

from control_plane.resources import usage
from control_plane.resources.usage_rollups import DAY_MS, HOUR_MS, Segment, plan
from control_plane.store import db

BASE_MS = ms("2025-03-01T00:00:00")
WORKSPACES = ("ws-1", "ws-2")
KEYS = ("k-1", "k-2", "k-3")
MEMBERS = ("m-1", "m-2")
MODELS = ("gpt-4o", "claude-sonnet-4-5")
ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")

# Times within four days, often exactly on an hour or a day boundary or a millisecond beside one.
offsets = st.one_of(
    st.integers(-DAY_MS, 3 * DAY_MS),
    st.builds(
        lambda hours, delta: hours * HOUR_MS + delta, st.integers(-24, 72), st.sampled_from((-1, 0, 1))
    ),
)


@st.composite
def records(draw: st.DrawFn, index: int) -> usage_pb2.UsageRecord:
    return record(
        f"r-{index}",
        started_at_ms=BASE_MS + draw(offsets),
        workspace_id=draw(st.sampled_from(WORKSPACES)),
        key_id=draw(st.sampled_from(KEYS)),
        member_id=draw(st.sampled_from(MEMBERS)),
        model_used=draw(st.sampled_from(MODELS)),
        endpoint=draw(st.sampled_from(ENDPOINTS)),
        input_tokens=draw(st.integers(0, 10**6)),
        cached_input_tokens=draw(st.integers(0, 10**4)),
        output_tokens=draw(st.integers(0, 10**6)),
        credits=f"{draw(st.integers(0, 10**6))}e-{draw(st.integers(6, 12))}",  # up to 1 credit
        file_bytes=draw(st.sampled_from((0, 0, 1, 512 * 1024 * 1024))),
    )


@st.composite
def data_sets(draw: st.DrawFn) -> list[usage_pb2.UsageRecord]:
    count = draw(st.integers(0, 60))
    return [draw(records(i)) for i in range(count)]


def _offset(rng: random.Random) -> int:
    return rng.choice((rng.randint(-DAY_MS, 3 * DAY_MS), rng.randint(-24, 72) * HOUR_MS))


def _fixed_data(count: int, seed: int) -> list[usage_pb2.UsageRecord]:
    """A reproducible data set like ``records``' (for tests that store once and query many times)."""
    rng = random.Random(seed)
    return [
        record(
            f"r-{i}",
            started_at_ms=BASE_MS
            + rng.choice((rng.randint(-DAY_MS, 3 * DAY_MS), rng.randint(-24, 72) * HOUR_MS)),
            workspace_id=rng.choice(WORKSPACES),
            key_id=rng.choice(KEYS),
            member_id=rng.choice(MEMBERS),
            model_used=rng.choice(MODELS),
            endpoint=rng.choice(ENDPOINTS),
            input_tokens=rng.randint(0, 10**6),
            cached_input_tokens=rng.randint(0, 10**4),
            output_tokens=rng.randint(0, 10**6),
            credits=f"{rng.randint(0, 10**6)}e-{rng.randint(6, 12)}",
            file_bytes=rng.choice((0, 0, 1, 512 * 1024 * 1024)),
        )
        for i in range(count)
    ]


def _bound(moment_ms: int, as_date: bool) -> str:
    moment = datetime.fromtimestamp(moment_ms / 1000, UTC)
    return moment.date().isoformat() if as_date else moment.isoformat()


bounds = st.one_of(st.none(), st.builds(lambda o, d: _bound(BASE_MS + o, d), offsets, st.booleans()))
queries = st.builds(
    usage.UsageQuery,
    workspace=st.one_of(st.none(), st.sampled_from((*WORKSPACES, "ws-unknown"))),
    key=st.one_of(st.none(), st.sampled_from(KEYS)),
    member=st.one_of(st.none(), st.sampled_from(MEMBERS)),
    model=st.one_of(st.none(), st.sampled_from(MODELS)),
    start=bounds,
    end=bounds,
    group_by=st.one_of(st.none(), st.sampled_from(usage.GROUP_BY)),
    endpoint=st.one_of(st.none(), st.sampled_from(ENDPOINTS)),
)


def _both_answers(factory: sessionmaker[Session], query: usage.UsageQuery) -> tuple[Any, Any]:
    with factory() as session:
        return usage.report(session, query), usage.report(session, query, rollups=False)


@given(
    start=st.one_of(st.none(), st.builds(lambda o: BASE_MS + o, offsets)),
    end=st.one_of(st.none(), st.builds(lambda o: BASE_MS + o, offsets)),
    probes=st.lists(st.builds(lambda o: BASE_MS + o, offsets), max_size=30),
)
def test_plan_covers_the_range_exactly_once(start: int | None, end: int | None, probes: list[int]) -> None:
    segments = plan(start, end)
    for segment in segments:
        step = {"records": 1, "hour": HOUR_MS, "day": DAY_MS}[segment.source]
        for edge in (segment.start_ms, segment.end_ms):
            assert edge is None or edge % step == 0
    edges = [start, end] if start is not None or end is not None else []
    for moment in [*probes, *(e for e in edges if e is not None)]:
        inside = (start is None or moment >= start) and (end is None or moment < end)
        holders = [s for s in segments if _holds(s, moment)]
        assert len(holders) == (1 if inside else 0), (moment, segments)


def _holds(segment: Segment, moment: int) -> bool:
    return (segment.start_ms is None or moment >= segment.start_ms) and (
        segment.end_ms is None or moment < segment.end_ms
    )


def test_thirty_whole_days_read_only_daily_rollups() -> None:
    start = ms("2025-03-01T00:00:00")
    assert plan(start, start + 30 * DAY_MS) == [Segment("day", start, start + 30 * DAY_MS)]
    assert plan(None, None) == [Segment("day", None, None)]


# The suite's profile (tests/conftest.py) plus: the fixtures give each example a database of its own.
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=data_sets(), query_list=st.lists(queries, min_size=1, max_size=8))
def test_rollups_answer_as_the_records_do(
    data: list[usage_pb2.UsageRecord],
    query_list: list[usage.UsageQuery],
    migrated_template: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    path = tmp_path_factory.mktemp("rollups") / "infery.db"
    shutil.copyfile(migrated_template, path)
    engine = db.create_engine(f"sqlite:///{path}")
    try:
        factory = db.session_factory(engine)
        half = len(data) // 2
        store(factory, data[: half + 1])
        store(factory, data[half // 2 :])  # redelivered and new records in one batch
        for query in query_list:
            with_rollups, from_records = _both_answers(factory, query)
            assert with_rollups == from_records, query
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_rollups_answer_as_the_records_do_on_each_database(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_url")
    db.migrate(url)
    engine = db.create_engine(url)
    try:
        factory = db.session_factory(engine)
        data = _fixed_data(400, seed=19)
        for start in range(0, len(data), 50):
            store(factory, data[start : start + 70])  # batches overlap: each boundary redelivered

        @settings(max_examples=150)
        @given(query=queries)
        def check(query: usage.UsageQuery) -> None:
            with_rollups, from_records = _both_answers(factory, query)
            assert with_rollups == from_records, query

        check()
        with factory() as session:
            (total,) = usage.report(session, usage.UsageQuery())
        assert total.requests == 400
    finally:
        engine.dispose()


def test_migration_backfills_the_rollups_from_stored_records(
    sqlite_url: str, session_factory: sessionmaker[Session]
) -> None:
    """Records stored before the rollups existed are in them after the upgrade."""
    store(session_factory, _fixed_data(200, seed=7))
    engine = db.create_engine(sqlite_url)
    try:
        config = db.alembic_config(sqlite_url)
        for step, target in ((command.downgrade, "0008_files_usage"), (command.upgrade, "head")):
            with engine.begin() as connection:
                config.attributes["connection"] = connection
                step(config, target)
    finally:
        engine.dispose()
    day, hours = ("2025-03-01", "2025-03-02"), ("2025-03-01T05:30:00", "2025-03-03T07:00:00")
    for group_by in (None, *usage.GROUP_BY):
        for start, end in ((None, None), day, hours):
            query = usage.UsageQuery(group_by=group_by, start=start, end=end)
            with_rollups, from_records = _both_answers(session_factory, query)
            assert with_rollups == from_records, query
            assert with_rollups or start is not None
