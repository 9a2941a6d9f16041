"""State that every gateway replica must agree on: rate buckets, budget totals, idempotency records.

One small interface, two backends. :class:`RedisState` (``INFERY_REDIS_URL``)
makes each operation one atomic Lua script, so replicas never race between a
read and a write, and reads the clock from Redis (``TIME``) so replicas with
skewed clocks still share one timeline. :class:`MemoryState` is the
single-replica fallback: plain dicts, atomic because its methods never await.

Keys are ``<prefix>:{<workspace>}:...``. The braces are a Redis Cluster hash
tag (one workspace's keys share a slot, so multi-key scripts stay legal) and
every key embeds its workspace, so no lookup can reach another workspace's
records.

Rate limits are GCRA buckets kept in integers. A bucket holds a *debt* in
units of ms x limit: a request (or token) adds ``WINDOW_MS``, and the debt
drains by ``limit`` per ms, so a full bucket (``limit * WINDOW_MS``) drains in
exactly one window. Integers (not float timestamps) keep "exactly N admitted"
exact; Lua numbers are doubles, exact up to 2**53, which covers limits up to
~10**11 per minute.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger("infery.ext_proc.state")

WINDOW_MS = 60_000
_SAFE_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class StateUnavailable(Exception):
    """The shared store could not answer; callers choose their failure direction."""


class Verdict(IntEnum):
    OK = 0
    REQUESTS = 1  # rpm exhausted
    TOKENS = 2  # tpm exhausted
    BUDGET = 3  # budget spent


@dataclass(frozen=True, slots=True)
class RateAsk:
    """One admission, checked and counted atomically. ``None`` = not limited."""

    rpm: int | None
    tpm: int | None
    tokens: int  # reserved against tpm
    budget_pico: int | None
    period: str  # budget period id, e.g. "d2025-01-31" or "m2025-01"
    # Whose buckets: "" live requests', BATCH_LANE batch lines' (the budget is the workspace's either way).
    lane: str = ""


BATCH_LANE = ":batch"


@dataclass(frozen=True, slots=True)
class RateResult:
    verdict: Verdict
    retry_ms: int  # when refused by rpm/tpm: wait until the request would fit
    requests_debt: int
    tokens_debt: int


class SharedState(ABC):
    @abstractmethod
    async def rate(self, workspace_id: str, ask: RateAsk) -> RateResult:
        """Refuse on budget first (counting nothing), else count the request and reserve its tokens
        only if both rpm and tpm have room."""

    @abstractmethod
    async def settle(
        self,
        workspace_id: str,
        tpm: int | None,
        token_delta: int,
        period: str,
        pico: int,
        expire_at_ms: int,
        lane: str = "",
    ) -> None:
        """Correct the token bucket by ``token_delta`` and add ``pico`` to the period's budget total
        (kept until the wall-clock time ``expire_at_ms``)."""

    @abstractmethod
    async def idem_begin(
        self, workspace_id: str, key_hash: str, fingerprint: bytes, token: str, lease_ms: int
    ) -> tuple[str, bytes | None]:
        """Claim a key. Returns ("proceed" | "replay" | "in_use" | "mismatch", stored blob or None).
        Claiming again with the same token is "proceed", so a retried call cannot lock itself out."""

    @abstractmethod
    async def idem_complete(
        self, workspace_id: str, key_hash: str, token: str | None, blob: bytes, ttl_ms: int
    ) -> bool:
        """Store the response of a pending claim (owned by ``token``, or by anyone when None)."""

    @abstractmethod
    async def idem_release(self, workspace_id: str, key_hash: str, token: str | None) -> bool:
        """Drop a pending claim so a retry may proceed; a stored response is never dropped."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass


def require_shared_store(processes: int, redis_url: str | None) -> None:
    """Refuse several ext_proc processes that would each keep their own limits and idempotency keys.

    In-process state is one process's: with two of them one Idempotency-Key can be
    charged twice and ``rpm=1`` admits two requests a minute. Raises ``ValueError``.
    """
    if processes > 1 and not redis_url:
        raise ValueError(
            f"INFERY_EXT_PROCS={processes} needs INFERY_REDIS_URL: without Redis each ext_proc process "
            "keeps its own rate limits, budgets and idempotency keys (one key could be charged twice). "
            "Set INFERY_REDIS_URL, or run one ext_proc process (INFERY_EXT_PROCS=1)."
        )


def open_state(redis_url: str | None, *, prefix: str = "infery", timeout_s: float = 1.0) -> SharedState:
    """Redis when a URL is configured (every replica agrees), else this process's memory."""
    if redis_url:
        return RedisState(redis_url, prefix=prefix, timeout_s=timeout_s)
    return MemoryState(prefix=prefix)


def workspace_base(prefix: str, workspace_id: str) -> str:
    """``prefix:{workspace}``; an id outside a safe alphabet is hashed so it cannot forge another's key."""
    if not _SAFE_ID.fullmatch(workspace_id):
        workspace_id = "h" + hashlib.sha256(workspace_id.encode()).hexdigest()
    return f"{prefix}:{{{workspace_id}}}"


def remaining(limit: int, debt: int) -> int:
    """Units a bucket could still admit right now."""
    return max(0, (limit * WINDOW_MS - debt) // WINDOW_MS)


def reset_ms(limit: int, debt: int) -> int:
    """Time until the bucket is full again (OpenAI's ``x-ratelimit-reset-*``)."""
    return -(-debt // limit) if debt > 0 else 0


# -- Redis ---------------------------------------------------------------------

_LUA_BUCKET = """
local W = 60000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function debt(key, limit)
  local v = redis.call('HMGET', key, 'd', 't')
  local d = tonumber(v[1])
  if not d then return 0 end
  local elapsed = now - tonumber(v[2])
  if elapsed > 0 then d = d - elapsed * limit end
  if d < 0 then return 0 end
  return d
end
local function store(key, limit, d)
  if d <= 0 then
    redis.call('DEL', key)
    return
  end
  redis.call('HSET', key, 'd', string.format('%.0f', d), 't', string.format('%.0f', now))
  redis.call('PEXPIRE', key, math.ceil(d / limit) + 1000)
end
"""

# KEYS: requests bucket, tokens bucket, budget total.
# ARGV: rpm ('' = none), tpm ('' = none), tokens to reserve, budget in pico-credits ('' = none).
_LUA_RATE = (
    _LUA_BUCKET
    + """
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local rd = 0
local td = 0
if rpm then rd = debt(KEYS[1], rpm) end
if tpm then td = debt(KEYS[2], tpm) end
local budget = ARGV[4]
if budget ~= '' then
  -- canonical non-negative integers compare exactly as (length, text)
  local spent = redis.call('GET', KEYS[3]) or '0'
  if #spent > #budget or (#spent == #budget and spent >= budget) then
    return {3, 0, rd, td}
  end
end
local verdict = 0
local wait = 0
if rpm and rd + W > rpm * W then
  verdict = 1
  wait = math.ceil((rd + W - rpm * W) / rpm)
end
if tpm and td + cost * W > tpm * W then
  if verdict == 0 then verdict = 2 end
  wait = math.max(wait, math.ceil((td + cost * W - tpm * W) / tpm))
end
if verdict ~= 0 then return {verdict, wait, rd, td} end
if rpm then
  rd = rd + W
  store(KEYS[1], rpm, rd)
end
if tpm and cost > 0 then
  td = td + cost * W
  store(KEYS[2], tpm, td)
end
return {0, 0, rd, td}
"""
)

# KEYS: tokens bucket, budget total. ARGV: tpm ('' = none), token delta, pico-credits, expire-at (unix ms).
_LUA_SETTLE = (
    _LUA_BUCKET
    + """
local tpm = tonumber(ARGV[1])
local delta = tonumber(ARGV[2])
if tpm and delta ~= 0 then store(KEYS[1], tpm, debt(KEYS[1], tpm) + delta * W) end
if ARGV[3] ~= '0' then
  redis.call('INCRBY', KEYS[2], ARGV[3])
  redis.call('PEXPIREAT', KEYS[2], ARGV[4])
end
return 1
"""
)

# KEYS: record. ARGV: fingerprint, token, lease ms.
_LUA_BEGIN = """
local r = redis.call('HMGET', KEYS[1], 'fp', 'owner', 'resp')
if not r[1] then
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'owner', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'proceed'}
end
if r[1] ~= ARGV[1] then return {'mismatch'} end
if r[3] then return {'replay', r[3]} end
if r[2] == ARGV[2] then return {'proceed'} end
return {'in_use'}
"""

# KEYS: record. ARGV: token ('' = any owner), response blob, ttl ms.
_LUA_COMPLETE = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner or (ARGV[1] ~= '' and owner ~= ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'resp', ARGV[2])
redis.call('HDEL', KEYS[1], 'owner')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS: record. ARGV: token ('' = any owner).
_LUA_RELEASE = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner or (ARGV[1] ~= '' and owner ~= ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""


class RedisState(SharedState):
    """Shared by every replica. Short socket timeouts and no client-side retries: a dead Redis
    must fail fast, and re-running a non-idempotent script after a lost reply would count twice.
    1 s, not less: a burst that opens many connections at once (each loading the scripts) took
    over 0.25 s on a busy 2-core machine, and idempotency fails closed (503) on a timeout."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "infery",
        timeout_s: float = 1.0,
        max_connections: int = 64,
        pool_wait_s: float = 2.0,
    ) -> None:
        self.prefix = prefix
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            # Waiting for a pooled connection is our own burst, not a dead Redis: allow longer.
            timeout=pool_wait_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )
        self._redis: Redis = Redis.from_pool(pool)
        self._rate = self._redis.register_script(_LUA_RATE)
        self._settle = self._redis.register_script(_LUA_SETTLE)
        self._begin = self._redis.register_script(_LUA_BEGIN)
        self._complete = self._redis.register_script(_LUA_COMPLETE)
        self._release = self._redis.register_script(_LUA_RELEASE)
        self._healthy = True

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            result = await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:  # OSError covers TimeoutError and refused sockets
            if self._healthy:
                self._healthy = False
                log.warning("shared state (Redis) unavailable: %s: %s", type(exc).__name__, exc)
            raise StateUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if not self._healthy:
            self._healthy = True
            log.warning("shared state (Redis) is back")
        return result

    async def rate(self, workspace_id: str, ask: RateAsk) -> RateResult:
        base = workspace_base(self.prefix, workspace_id)
        verdict, wait, rd, td = await self._run(
            self._rate,
            [f"{base}:rpm{ask.lane}", f"{base}:tpm{ask.lane}", f"{base}:budget:{ask.period}"],
            [_opt(ask.rpm), _opt(ask.tpm), ask.tokens, _opt(ask.budget_pico)],
        )
        return RateResult(Verdict(verdict), int(wait), int(rd), int(td))

    async def settle(
        self,
        workspace_id: str,
        tpm: int | None,
        token_delta: int,
        period: str,
        pico: int,
        expire_at_ms: int,
        lane: str = "",
    ) -> None:
        base = workspace_base(self.prefix, workspace_id)
        await self._run(
            self._settle,
            [f"{base}:tpm{lane}", f"{base}:budget:{period}"],
            [_opt(tpm), token_delta, pico, expire_at_ms],
        )

    async def idem_begin(
        self, workspace_id: str, key_hash: str, fingerprint: bytes, token: str, lease_ms: int
    ) -> tuple[str, bytes | None]:
        key = self._idem_key(workspace_id, key_hash)
        reply = await self._run(self._begin, [key], [fingerprint, token, lease_ms])
        return reply[0].decode(), (reply[1] if len(reply) > 1 else None)

    async def idem_complete(
        self, workspace_id: str, key_hash: str, token: str | None, blob: bytes, ttl_ms: int
    ) -> bool:
        key = self._idem_key(workspace_id, key_hash)
        return bool(await self._run(self._complete, [key], [token or "", blob, ttl_ms]))

    async def idem_release(self, workspace_id: str, key_hash: str, token: str | None) -> bool:
        key = self._idem_key(workspace_id, key_hash)
        return bool(await self._run(self._release, [key], [token or ""]))

    def _idem_key(self, workspace_id: str, key_hash: str) -> str:
        return f"{workspace_base(self.prefix, workspace_id)}:idem:{key_hash}"

    async def close(self) -> None:
        await self._redis.aclose()


def _opt(value: int | None) -> int | str:
    return "" if value is None else value


# -- in process ----------------------------------------------------------------


@dataclass(slots=True)
class _Record:
    fingerprint: bytes
    owner: str | None
    blob: bytes | None
    expires: float  # on the monotonic clock


class MemoryState(SharedState):
    """One replica's state. The same arithmetic as the Lua scripts, on a monotonic clock
    (budget totals expire on the wall clock, like their period ids)."""

    _SWEEP_EVERY_S = 60.0

    def __init__(
        self,
        *,
        prefix: str = "infery",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.prefix = prefix
        self._clock = clock
        self._wall = wall
        self._buckets: dict[str, tuple[int, int, int]] = {}  # key -> (debt, at ms, limit)
        self._totals: dict[str, tuple[int, float]] = {}  # key -> (pico, expire-at wall s)
        self._records: dict[str, _Record] = {}
        self._next_sweep = clock() + self._SWEEP_EVERY_S

    async def rate(self, workspace_id: str, ask: RateAsk) -> RateResult:
        self._maybe_sweep()
        base = workspace_base(self.prefix, workspace_id)
        now = self._now_ms()
        rpm_key, tpm_key = f"{base}:rpm{ask.lane}", f"{base}:tpm{ask.lane}"
        rd = self._debt(rpm_key, ask.rpm, now) if ask.rpm else 0
        td = self._debt(tpm_key, ask.tpm, now) if ask.tpm else 0
        if ask.budget_pico is not None:
            spent, _ = self._totals.get(f"{base}:budget:{ask.period}", (0, 0.0))
            if spent >= ask.budget_pico:
                return RateResult(Verdict.BUDGET, 0, rd, td)
        verdict, wait = Verdict.OK, 0
        if ask.rpm and rd + WINDOW_MS > ask.rpm * WINDOW_MS:
            verdict = Verdict.REQUESTS
            wait = -(-(rd + WINDOW_MS - ask.rpm * WINDOW_MS) // ask.rpm)
        cost = ask.tokens * WINDOW_MS
        if ask.tpm and td + cost > ask.tpm * WINDOW_MS:
            verdict = verdict or Verdict.TOKENS
            wait = max(wait, -(-(td + cost - ask.tpm * WINDOW_MS) // ask.tpm))
        if verdict:
            return RateResult(verdict, wait, rd, td)
        if ask.rpm:
            rd += WINDOW_MS
            self._store(rpm_key, ask.rpm, rd, now)
        if ask.tpm and cost:
            td += cost
            self._store(tpm_key, ask.tpm, td, now)
        return RateResult(Verdict.OK, 0, rd, td)

    async def settle(
        self,
        workspace_id: str,
        tpm: int | None,
        token_delta: int,
        period: str,
        pico: int,
        expire_at_ms: int,
        lane: str = "",
    ) -> None:
        base = workspace_base(self.prefix, workspace_id)
        if tpm and token_delta:
            now = self._now_ms()
            key = f"{base}:tpm{lane}"
            self._store(key, tpm, self._debt(key, tpm, now) + token_delta * WINDOW_MS, now)
        if pico:
            key = f"{base}:budget:{period}"
            spent, _ = self._totals.get(key, (0, 0.0))
            self._totals[key] = (spent + pico, expire_at_ms / 1000)

    async def idem_begin(
        self, workspace_id: str, key_hash: str, fingerprint: bytes, token: str, lease_ms: int
    ) -> tuple[str, bytes | None]:
        self._maybe_sweep()
        key = self._idem_key(workspace_id, key_hash)
        record = self._live_record(key)
        if record is None:
            self._records[key] = _Record(fingerprint, token, None, self._clock() + lease_ms / 1000)
            return "proceed", None
        if record.fingerprint != fingerprint:
            return "mismatch", None
        if record.blob is not None:
            return "replay", record.blob
        return ("proceed" if record.owner == token else "in_use"), None

    async def idem_complete(
        self, workspace_id: str, key_hash: str, token: str | None, blob: bytes, ttl_ms: int
    ) -> bool:
        record = self._live_record(self._idem_key(workspace_id, key_hash))
        if record is None or record.owner is None or (token is not None and record.owner != token):
            return False
        record.owner, record.blob, record.expires = None, blob, self._clock() + ttl_ms / 1000
        return True

    async def idem_release(self, workspace_id: str, key_hash: str, token: str | None) -> bool:
        key = self._idem_key(workspace_id, key_hash)
        record = self._live_record(key)
        if record is None or record.owner is None or (token is not None and record.owner != token):
            return False
        del self._records[key]
        return True

    def _idem_key(self, workspace_id: str, key_hash: str) -> str:
        return f"{workspace_base(self.prefix, workspace_id)}:idem:{key_hash}"

    def _live_record(self, key: str) -> _Record | None:
        record = self._records.get(key)
        if record is not None and record.expires <= self._clock():
            del self._records[key]
            return None
        return record

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _debt(self, key: str, limit: int, now: int) -> int:
        debt, at, _ = self._buckets.get(key, (0, now, limit))
        return max(0, debt - max(0, now - at) * limit)

    def _store(self, key: str, limit: int, debt: int, now: int) -> None:
        if debt > 0:
            self._buckets[key] = (debt, now, limit)
        else:
            self._buckets.pop(key, None)

    def _maybe_sweep(self) -> None:
        """Drop expired records and drained buckets now and then, so memory tracks live keys only."""
        mono = self._clock()
        if mono < self._next_sweep:
            return
        self._next_sweep = mono + self._SWEEP_EVERY_S
        self._records = {k: r for k, r in self._records.items() if r.expires > mono}
        wall = self._wall()
        self._totals = {k: v for k, v in self._totals.items() if v[1] > wall}
        now = int(mono * 1000)
        self._buckets = {k: v for k, v in self._buckets.items() if v[0] > (now - v[1]) * v[2]}
