"""Rate limits and budgets against Redis (also as two replicas) and the in-process store."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from redis.asyncio import Redis

from ext_proc.config import Workspace
from ext_proc.limits import (
    Admission,
    Limiter,
    LimitError,
    budget_period,
    format_duration,
    to_pico,
)
from ext_proc.shared_state import (
    MemoryState,
    RateAsk,
    RateResult,
    SharedState,
    StateUnavailable,
    open_state,
    workspace_base,
)

FUTURE = datetime.now(UTC).year + 2


def workspace(
    rpm: int | None = None,
    tpm: int | None = None,
    budget: str | None = None,
    period: str = "month",
    wid: str = "ws1",
) -> Workspace:
    return Workspace(
        wid, wid, rpm, tpm, Decimal(budget) if budget is not None else None, period, Decimal(1), None
    )


async def refusal(limiter: Limiter, ws: Workspace, tokens: int = 1) -> LimitError:
    with pytest.raises(LimitError) as info:
        await limiter.admit(ws, tokens)
    return info.value


def header(headers: object, name: str) -> str:
    values = [v for k, v in headers if k == name]  # type: ignore[attr-defined]
    assert len(values) == 1, (name, headers)
    return values[0]


# -- requests per minute ------------------------------------------------------------


async def test_burst_from_two_replicas_admits_exactly_rpm(backend) -> None:
    limiters = [Limiter(backend.state), Limiter(backend.replica())]
    ws = workspace(rpm=20)
    results = await asyncio.gather(*(limiters[i % 2].admit(ws, 1) for i in range(60)), return_exceptions=True)
    admitted = [r for r in results if isinstance(r, Admission)]
    refused = [r for r in results if isinstance(r, LimitError)]
    assert len(admitted) == 20
    assert len(refused) == 40
    for err in refused:
        assert (err.status, err.code) == (429, "rate_limit_exceeded")
        assert err.retry_after is not None and 1 <= err.retry_after <= 3  # one request refills in 3 s
        assert header(err.headers, "x-ratelimit-remaining-requests") == "0"
        assert 0 < int(header(err.headers, "retry-after-ms")) <= 3000
    remaining = sorted(int(header(a.headers, "x-ratelimit-remaining-requests")) for a in admitted)
    assert remaining == list(range(20))


async def test_batch_lines_have_a_lane_of_their_own_and_never_take_live_traffics(backend) -> None:
    limiter = Limiter(backend.state)
    ws = replace(workspace(rpm=5, tpm=1000), batch_rpm=3, batch_tpm=600)
    for _ in range(3):
        await limiter.admit(ws, 10, batch=True)
    refused = await refusal_batch(limiter, ws)
    assert (
        refused.code == "rate_limit_exceeded" and header(refused.headers, "x-ratelimit-limit-requests") == "3"
    )
    live = [await limiter.admit(ws, 10) for _ in range(5)]  # the batch lane full: live traffic untouched
    assert header(live[-1].headers, "x-ratelimit-remaining-requests") == "0"
    # Unset batch limits: the workspace's own figures, in buckets of their own.
    same = workspace(rpm=2, wid="ws2")
    for _ in range(2):
        await limiter.admit(same, 1)
    await limiter.admit(same, 1, batch=True)


async def test_a_batch_spends_the_workspaces_budget(backend) -> None:
    limiter = Limiter(backend.state)
    ws = workspace(budget="1")
    admission = await limiter.admit(ws, 1, batch=True)
    await limiter.settle(admission, 1, Decimal("1"))
    assert (await refusal(limiter, ws)).code == "insufficient_quota"  # live requests see the batch's spend


async def refusal_batch(limiter: Limiter, ws: Workspace) -> LimitError:
    with pytest.raises(LimitError) as info:
        await limiter.admit(ws, 1, batch=True)
    return info.value


async def test_headers_use_openai_names_and_formats(backend) -> None:
    admission = await Limiter(backend.state).admit(workspace(rpm=60, tpm=6000), 100)
    assert admission.headers == [
        ("x-ratelimit-limit-requests", "60"),
        ("x-ratelimit-remaining-requests", "59"),
        ("x-ratelimit-reset-requests", "1s"),  # one request of 60/min refills in 1 s
        ("x-ratelimit-limit-tokens", "6000"),
        ("x-ratelimit-remaining-tokens", "5900"),
        ("x-ratelimit-reset-tokens", "1s"),  # 100 tokens at 100 tokens/s
    ]


async def test_only_the_limits_a_workspace_has_get_headers(backend) -> None:
    limiter = Limiter(backend.state)
    rpm_only = await limiter.admit(workspace(rpm=5000, wid="a"), 10)
    assert [k for k, _ in rpm_only.headers] == [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ]
    assert header(rpm_only.headers, "x-ratelimit-reset-requests") == "12ms"
    tpm_only = await limiter.admit(workspace(tpm=1000, wid="b"), 10)
    assert [k for k, _ in tpm_only.headers] == [
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ]
    budget_only = await limiter.admit(workspace(budget="5", wid="c"), 10)
    assert budget_only.headers == []


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (1, "1ms"),
        (59, "59ms"),
        (999, "999ms"),
        (1000, "1s"),
        (1500, "1.5s"),
        (17_369, "17.369s"),
        (60_000, "1m0s"),
        (360_000, "6m0s"),
        (61_250, "1m1.25s"),
        (3_600_000, "1h0m0s"),
        (-5, "0s"),
    ],
)
def test_durations_read_like_openais(ms: int, text: str) -> None:
    assert format_duration(ms) == text


async def test_workspaces_do_not_share_limits(backend) -> None:
    limiter = Limiter(backend.state)
    await limiter.admit(workspace(rpm=1, wid="ws-a"), 1)
    assert (await refusal(limiter, workspace(rpm=1, wid="ws-a"))).code == "rate_limit_exceeded"
    await limiter.admit(workspace(rpm=1, wid="ws-b"), 1)
    assert workspace_base("p", "ws-a") == "p:{ws-a}"
    assert "}" not in workspace_base("p", "ws-a}:rpm")[3:-1]


async def test_a_zero_limit_admits_nothing_without_a_round_trip() -> None:
    spy = Spy()
    err = await refusal(Limiter(spy), workspace(rpm=0, tpm=100))
    assert (err.status, err.code, err.retry_after) == (429, "rate_limit_exceeded", 60)
    assert header(err.headers, "x-ratelimit-limit-requests") == "0"
    assert spy.calls == 0


# -- tokens per minute ----------------------------------------------------------------


async def test_concurrent_reservations_cannot_overshoot(backend) -> None:
    limiters = [Limiter(backend.state), Limiter(backend.replica())]
    ws = workspace(tpm=1000)
    results = await asyncio.gather(
        *(limiters[i % 2].admit(ws, 300) for i in range(10)), return_exceptions=True
    )
    admitted = [r for r in results if isinstance(r, Admission)]
    refused = [r for r in results if isinstance(r, LimitError)]
    assert len(admitted) == 3  # 3 x 300 reserved; a 4th would reach 1200 > 1000
    assert all("tokens" in e.message and e.code == "rate_limit_exceeded" for e in refused)

    # settling at the real usage hands back what was over-reserved
    for admission in admitted:
        await limiters[0].settle(admission, 100, Decimal(0))
    admission = await limiters[1].admit(ws, 300)
    # 1000 - 300 (settled) - 300 (new), plus what refilled meanwhile (17 tokens/s)
    assert 400 <= int(header(admission.headers, "x-ratelimit-remaining-tokens")) <= 450


async def test_usage_above_the_estimate_is_counted(backend) -> None:
    limiter = Limiter(backend.state)
    ws = workspace(tpm=6000)
    admission = await limiter.admit(ws, 100)
    assert admission.reserved_tokens == 100
    await limiter.settle(admission, 12_000, Decimal(0))  # a stream that ran long
    err = await refusal(limiter, ws, 1)
    assert err.retry_after is not None and 59 <= err.retry_after <= 61
    assert header(err.headers, "x-ratelimit-remaining-tokens") == "0"


async def test_failed_request_returns_its_reservation(backend) -> None:
    limiter = Limiter(backend.state)
    ws = workspace(tpm=1000)
    admission = await limiter.admit(ws, 900)
    await refusal(limiter, ws, 200)
    await limiter.settle(admission, 0, Decimal(0))
    again = await limiter.admit(ws, 900)
    assert int(header(again.headers, "x-ratelimit-remaining-tokens")) >= 100


async def test_a_request_larger_than_the_limit_passes_a_full_bucket(backend) -> None:
    limiter = Limiter(backend.state)
    ws = workspace(tpm=500)
    admission = await limiter.admit(ws, 5000)
    assert admission.reserved_tokens == 500
    await refusal(limiter, ws, 1)


async def test_tokens_refill_continuously(backend) -> None:
    limiter = Limiter(backend.state)
    ws = workspace(tpm=6000)  # 100 tokens per second
    await limiter.admit(ws, 6000)
    err = await refusal(limiter, ws, 50)
    wait_ms = int(header(err.headers, "retry-after-ms"))
    assert 0 < wait_ms <= 500  # 50 tokens at 100/s, less what refilled since
    await asyncio.sleep(wait_ms / 1000 + 0.05)
    await limiter.admit(ws, 50)


async def test_a_refused_request_counts_nothing(backend) -> None:
    limiter = Limiter(backend.state)
    ws = workspace(rpm=5, tpm=100)
    await limiter.admit(ws, 100)
    for _ in range(3):
        err = await refusal(limiter, ws, 50)  # tokens refuse it
        assert header(err.headers, "x-ratelimit-remaining-requests") == "4"


# -- budgets -------------------------------------------------------------------------


async def test_budget_is_refused_once_spent_exactly(backend, redis_client: Redis) -> None:
    day = datetime(FUTURE, 3, 14, 23, 59, tzinfo=UTC)  # totals expire on the wall clock
    limiter = Limiter(backend.state, now=lambda: day)
    ws = workspace(rpm=100, budget="0.001", period="day")
    first = await limiter.admit(ws, 10)
    await limiter.settle(first, 10, Decimal("0.0006"))
    second = await limiter.admit(ws, 10)
    await limiter.settle(second, 10, Decimal("0.0004"))
    err = await refusal(limiter, ws)
    assert (err.status, err.code, err.retry_after) == (429, "insufficient_quota", None)
    assert "daily budget" in err.message
    assert header(err.headers, "x-ratelimit-remaining-requests") == "98"  # refusals count nothing
    if backend.kind == "redis":
        key = f"{backend.prefix}:{{ws1}}:budget:d{FUTURE}-03-14"
        assert await redis_client.get(key) == b"1000000000"  # 0.001 credits in pico-credits, exact
    # the next UTC day starts from zero
    day = datetime(FUTURE, 3, 15, 0, 0, 1, tzinfo=UTC)
    await limiter.admit(ws, 10)


async def test_budget_compares_exactly_beyond_float_precision(backend) -> None:
    limiter = Limiter(backend.state)
    ws = workspace(budget="10000.000000000001")  # 10**16 + 1 pico-credits, past 2**53
    await limiter.settle(await limiter.admit(ws, 1), 0, Decimal("10000"))
    last = await limiter.admit(ws, 1)  # one pico-credit left
    await limiter.settle(last, 0, Decimal("0.000000000001"))
    assert (await refusal(limiter, ws)).code == "insufficient_quota"


async def test_monthly_budget_rolls_over(backend) -> None:
    now = datetime(FUTURE, 12, 31, 12, tzinfo=UTC)
    limiter = Limiter(backend.state, now=lambda: now)
    ws = workspace(budget="1")
    await limiter.settle(await limiter.admit(ws, 1), 0, Decimal("1.5"))
    err = await refusal(limiter, ws)
    assert "monthly budget" in err.message
    now = datetime(FUTURE + 1, 1, 1, tzinfo=UTC)
    await limiter.admit(ws, 1)


def test_budget_periods_are_utc_days_and_months() -> None:
    moment = datetime(2025, 12, 31, 23, 30, tzinfo=UTC)
    assert budget_period("day", moment) == ("d2025-12-31", _ms(datetime(2026, 1, 2, tzinfo=UTC)))
    assert budget_period("month", moment) == ("m2025-12", _ms(datetime(2026, 1, 2, tzinfo=UTC)))
    berlin_midnight = datetime(2025, 3, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert budget_period("month", berlin_midnight)[0] == "m2025-02"  # still February in UTC
    assert budget_period("day", berlin_midnight)[0] == "d2025-02-28"
    assert to_pico(Decimal("0.000375")) == 375_000_000


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# -- no limits, no cost --------------------------------------------------------------


class Spy(SharedState):
    """Counts every store operation; a limiter for an unlimited workspace must make none."""

    def __init__(self) -> None:
        self.calls = 0
        self._inner = MemoryState()

    async def rate(self, workspace_id: str, ask: RateAsk) -> RateResult:
        self.calls += 1
        return await self._inner.rate(workspace_id, ask)

    async def settle(self, *args: object) -> None:  # type: ignore[override]
        self.calls += 1
        await self._inner.settle(*args)  # type: ignore[arg-type]

    async def idem_begin(self, *args: object) -> tuple[str, bytes | None]:  # type: ignore[override]
        raise AssertionError

    async def idem_complete(self, *args: object) -> bool:  # type: ignore[override]
        raise AssertionError

    async def idem_release(self, *args: object) -> bool:  # type: ignore[override]
        raise AssertionError


async def test_unlimited_workspace_never_touches_the_store() -> None:
    spy = Spy()
    limiter = Limiter(spy)
    admission = await limiter.admit(workspace(), 10_000)
    assert admission.headers == []
    await limiter.settle(admission, 12_345, Decimal("1.23"))
    assert spy.calls == 0
    limited = await limiter.admit(workspace(rpm=10), 1)
    await limiter.settle(limited, 50, Decimal("1"))  # no tpm, no budget: nothing to settle
    assert spy.calls == 1


# -- the store is down ---------------------------------------------------------------


async def test_dead_redis_fails_open_with_one_warning(
    dead_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    state = open_state(dead_redis_url)
    limiter = Limiter(state)
    ws = workspace(rpm=1, tpm=10, budget="0")
    try:
        with caplog.at_level(logging.WARNING):
            started = time.monotonic()
            for _ in range(5):
                admission = await limiter.admit(ws, 1000)
                assert admission.fail_open and admission.headers == []
                await limiter.settle(admission, 10, Decimal("0.5"))
            assert time.monotonic() - started < 1.0
    finally:
        await state.close()
    assert limiter.fail_open == 10
    warnings = [r for r in caplog.records if r.name == "infery.ext_proc.limits"]
    assert len(warnings) == 1 and "not enforced" in warnings[0].getMessage()
    assert len([r for r in caplog.records if r.name == "infery.ext_proc.state"]) == 1


class Flaky(MemoryState):
    down = False

    async def rate(self, workspace_id: str, ask: RateAsk) -> RateResult:
        if self.down:
            raise StateUnavailable("down")
        return await super().rate(workspace_id, ask)


async def test_one_warning_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    state = Flaky()
    limiter = Limiter(state)
    ws = workspace(rpm=1000)
    with caplog.at_level(logging.WARNING, logger="infery.ext_proc.limits"):
        for down in (True, True, False, False, True, True, False):
            state.down = down
            admission = await limiter.admit(ws, 1)
            assert admission.fail_open is down
    messages = [r.getMessage() for r in caplog.records if r.name == "infery.ext_proc.limits"]
    assert ["not enforced" in m for m in messages] == [True, False, True, False]
    assert ["enforced again" in m for m in messages] == [False, True, False, True]
    assert limiter.fail_open == 4
