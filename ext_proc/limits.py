"""Per-workspace rate limits (rpm, tpm) and credit budgets, shared by every replica.

Windows are GCRA buckets, the model behind OpenAI's own headers: a workspace
with ``rpm=N`` may burst N requests at once and then regains one every 60/N s
(``x-ratelimit-reset-requests`` is the time until the bucket is full again,
e.g. "12ms" after one request at 5000 rpm). Unlike a fixed window there is no
boundary where 2N requests can land back to back; the cost is that a minute
that starts with a full bucket can admit N plus what refills during it.

Tokens: ``admit`` reserves an estimate (the endpoint's ``reservation``, in
ext_proc/endpoints/; capped at the limit so one large request can still pass
a full bucket) in the same atomic step that counts the request, so concurrent
requests see each other's reservations and a burst overshoots by at most the
estimate errors.
``settle`` swaps the reservation for the tokens actually used -- call it
exactly once per admission, also after failures (0 tokens hands the
reservation back).

Budgets: credits spent in the current UTC day or month, in integer
pico-credits (exact). A request is refused once the total reaches the budget;
requests already admitted still finish, so the total can end slightly above.
Only workspaces with a budget are tracked, so a budget set mid-period counts
from then on.

A workspace with no limit costs nothing: no store round trip at all. When
the store is down the limiter fails open (``fail_open`` counts it, one warning
per outage): a Redis outage must not take the gateway down.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

from infery_proto.wire import RATE_LIMIT_HEADERS, RETRY_AFTER_MS_HEADER

from ext_proc.config import Workspace
from ext_proc.errors import GatewayError
from ext_proc.shared_state import (
    BATCH_LANE,
    RateAsk,
    SharedState,
    StateUnavailable,
    Verdict,
    remaining,
    reset_ms,
)

log = logging.getLogger("infery.ext_proc.limits")

PICO_PER_CREDIT = Decimal(10) ** 12

Headers = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class LimitError(GatewayError):
    """A 429 that carries the ``x-ratelimit-*`` headers (and ``retry-after-ms``) to send with it."""

    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class Admission:
    """What :meth:`Limiter.settle` needs, and the headers for the response."""

    workspace_id: str
    tpm: int | None = None
    reserved_tokens: int = 0
    budget_period: str | None = None  # period id while the workspace has a budget
    budget_expire_at_ms: int = 0
    rate_headers: Headers = ()
    fail_open: bool = False
    lane: str = ""  # whose buckets: live requests' (""), or batch lines' (shared_state.BATCH_LANE)

    @property
    def headers(self) -> list[tuple[str, str]]:
        return list(self.rate_headers)

    @property
    def needs_settling(self) -> bool:
        """Whether :meth:`Limiter.settle` has anything to do (a token limit or a budget)."""
        return bool(self.tpm or self.budget_period)


class Limiter:
    def __init__(self, state: SharedState, *, now: Callable[[], datetime] | None = None) -> None:
        self._state = state
        self._now = now or (lambda: datetime.now(UTC))
        self._outage = False
        self.fail_open = 0  # admissions/settlements let through because the store was down
        self.refused: dict[str, int] = {"rate_limit": 0, "budget": 0}  # 429s given, for metrics

    async def admit(self, workspace: Workspace, estimated_tokens: int, *, batch: bool = False) -> Admission:
        """Admit a request, or raise the 429 that refuses it.

        ``batch``: a line of a batch, admitted against the workspace's batch lane (its
        ``batch_rpm``/``batch_tpm``, buckets of their own) and its budget: a batch never takes
        what a live request would be admitted on.
        """
        lane = BATCH_LANE if batch else ""
        if batch:
            workspace = workspace.batch_lane()
        rpm, tpm, budget = workspace.rpm, workspace.tpm, workspace.budget_credits
        if rpm is None and tpm is None and budget is None:
            return Admission(workspace.id, lane=lane)
        if rpm == 0 or tpm == 0:
            raise _closed(rpm, tpm)
        reserve = min(max(1, estimated_tokens), tpm) if tpm else 0
        period, expire_at = ("", 0)
        if budget is not None:
            period, expire_at = budget_period(workspace.budget_period, self._now())
        ask = RateAsk(rpm, tpm, reserve, to_pico(budget) if budget is not None else None, period, lane)
        try:
            result = await self._state.rate(workspace.id, ask)
        except StateUnavailable as exc:
            self._failed_open(exc)
            return Admission(workspace.id, tpm, 0, period or None, expire_at, fail_open=True, lane=lane)
        self._recovered()
        headers = rate_headers(rpm, tpm, result.requests_debt, result.tokens_debt)
        if result.verdict is Verdict.BUDGET:
            self.refused["budget"] += 1
            raise LimitError(
                429,
                "insufficient_quota",
                f"This workspace has spent its {'daily' if period[0] == 'd' else 'monthly'} budget "
                f"of {budget} credits.",
                headers=headers,
            )
        if result.verdict is not Verdict.OK:
            what, limit = ("requests", rpm) if result.verdict is Verdict.REQUESTS else ("tokens", tpm)
            wait = format_duration(result.retry_ms)
            self.refused["rate_limit"] += 1
            raise LimitError(
                429,
                "rate_limit_exceeded",
                f"Rate limit reached for {what} per minute (limit {limit}). Please try again in {wait}.",
                retry_after=max(1, math.ceil(result.retry_ms / 1000)),
                headers=(*headers, (RETRY_AFTER_MS_HEADER, str(max(1, result.retry_ms)))),
            )
        return Admission(workspace.id, tpm, reserve, period or None, expire_at, headers, lane=lane)

    async def settle(self, admission: Admission, actual_tokens: int, credits: Decimal) -> None:
        delta = actual_tokens - admission.reserved_tokens if admission.tpm else 0
        pico = max(0, to_pico(credits)) if admission.budget_period else 0
        if not delta and not pico:
            return
        try:
            await self._state.settle(
                admission.workspace_id,
                admission.tpm,
                delta,
                admission.budget_period or "",
                pico,
                admission.budget_expire_at_ms,
                admission.lane,
            )
        except StateUnavailable as exc:
            self._failed_open(exc)
            return
        self._recovered()

    def _failed_open(self, exc: StateUnavailable) -> None:
        self.fail_open += 1
        if not self._outage:
            self._outage = True
            log.warning("rate limits and budgets are not enforced while the shared state is down: %s", exc)

    def _recovered(self) -> None:
        if self._outage:
            self._outage = False
            log.warning("rate limits and budgets enforced again (%d let through so far)", self.fail_open)


def _closed(rpm: int | None, tpm: int | None) -> LimitError:
    """A limit of 0 admits nothing, ever; say so without a round trip."""
    what = "requests" if rpm == 0 else "tokens"
    headers = rate_headers(rpm, tpm, 0, 0)
    return LimitError(
        429,
        "rate_limit_exceeded",
        f"This workspace's {what} per minute limit is 0.",
        retry_after=60,
        headers=headers,
    )


def rate_headers(rpm: int | None, tpm: int | None, requests_debt: int, tokens_debt: int) -> Headers:
    """OpenAI's ``x-ratelimit-*`` set, for the limits the workspace has."""
    out: list[tuple[str, str]] = []
    for name, limit, debt in (("requests", rpm, requests_debt), ("tokens", tpm, tokens_debt)):
        if limit is None:
            continue
        names = RATE_LIMIT_HEADERS[name]
        out.append((names.limit, str(limit)))
        out.append((names.remaining, str(remaining(limit, debt) if limit else 0)))
        out.append((names.reset, format_duration(reset_ms(limit, debt) if limit else 0)))
    return tuple(out)


def format_duration(ms: int) -> str:
    """OpenAI's reset format, Go's duration syntax at ms precision: "59ms", "1.5s", "6m0s", "1h0m0s"."""
    ms = max(0, ms)
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    seconds = f"{secs}.{millis:03d}".rstrip("0") if millis else str(secs)
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def budget_period(period: str, now: datetime) -> tuple[str, int]:
    """The UTC day or month containing ``now``, as (id, unix ms until which its total is kept).

    Totals outlive their period by a day so that requests settling just after midnight still land.
    """
    now = now.astimezone(UTC)
    if period == "day":
        start = datetime(now.year, now.month, now.day, tzinfo=UTC)
        end = start + timedelta(days=1)
        ident = "d" + start.strftime("%Y-%m-%d")
    else:  # "month", the control plane's default
        start = datetime(now.year, now.month, 1, tzinfo=UTC)
        end = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
        ident = "m" + start.strftime("%Y-%m")
    return ident, int((end + timedelta(days=1)).timestamp() * 1000)


def to_pico(credits: Decimal) -> int:
    return int((credits * PICO_PER_CREDIT).to_integral_value(rounding=ROUND_FLOOR))
