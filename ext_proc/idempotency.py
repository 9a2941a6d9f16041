"""Idempotency keys: a retried POST is answered once, charged once.

Flow for a request carrying ``Idempotency-Key``::

    outcome = await idem.begin(workspace_id, key, fingerprint)   # before limits, before upstream
    if isinstance(outcome, Replay): send outcome.stored            # no upstream call, no charge
    ...                                                            # Proceed: serve it
    if should_store(status) and the response was fully delivered:
        await idem.complete(workspace_id, key, stored, outcome.token)
    else:
        await idem.release(workspace_id, key, outcome.token)

What is stored and what is released (SPEC: "first request finished -> stored
response replayed"): a finished response is stored when replaying it is what a
retry should get -- every 2xx/3xx, and 4xx answers that would repeat anyway.
A retry must be able to try again after failures that are not the request's
fault: 408, 409, 425, 429, 499 and every 5xx are released, and so is anything the
client never received in full (client gone, stream aborted or ended by an
error event, gateway rejections such as rate limits before any upstream call).
Nothing released was charged, so a retry cannot charge twice.

The claim is a lease (``lease_s``, 10 min) so a replica that dies mid-request
does not lock the key forever; a request outliving its lease loses exclusivity.
If the store is down, ``begin`` refuses with 503 rather than risk a second
charge; ``complete``/``release`` only log (the response already left).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from dataclasses import dataclass

import orjson
from infery_proto.wire import IDEMPOTENT_REPLAYED_HEADER

from ext_proc.errors import GatewayError
from ext_proc.shared_state import SharedState, StateUnavailable

log = logging.getLogger("infery.ext_proc.idempotency")

MAX_KEY_LENGTH = 255
_RETRYABLE_4XX = frozenset({408, 409, 425, 429, 499})  # 499: client closed the request
_MAX_CLEANUPS = 1000
_ONCE_BACK = (0.5, 2.0, 10.0)  # the store was down: try again once it may be back
_AT_ONCE = (0.0, 0.5, 2.0, 10.0)  # the store answers, we stopped listening: now, then as above


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What the client received: for a stream, ``body`` is the full SSE transcript."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    stream: bool

    def dump(self) -> bytes:
        meta = orjson.dumps({"status": self.status, "headers": self.headers, "stream": self.stream})
        return meta + b"\n" + self.body  # orjson never writes a raw newline

    @classmethod
    def load(cls, blob: bytes) -> StoredResponse:
        meta, _, body = blob.partition(b"\n")
        m = orjson.loads(meta)
        return cls(m["status"], [(k, v) for k, v in m["headers"]], body, m["stream"])


@dataclass(frozen=True, slots=True)
class Proceed:
    """This request owns the key; pass ``token`` to complete/release."""

    token: str


@dataclass(frozen=True, slots=True)
class Replay:
    """The stored response, headers already carrying ``idempotent-replayed: true``."""

    stored: StoredResponse


Begin = Proceed | Replay


def should_store(status: int) -> bool:
    """Whether a fully delivered response with this status is kept for replay (else release)."""
    return 200 <= status < 500 and status not in _RETRYABLE_4XX


def key_hash(key: str, scope: str = "") -> str:
    """Client keys never appear in Redis key names: they are arbitrary text of the client's.

    ``scope`` (a member id, or empty for the whole workspace) keeps one member's
    replays from another's: the same key from another member is another request.
    """
    return hashlib.sha256(scope.encode() + b"\n" + key.encode() if scope else key.encode()).hexdigest()


class Idempotency:
    def __init__(self, state: SharedState, ttl_s: float = 86400, lease_s: float = 600) -> None:
        self._state = state
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._lease_ms = max(1, int(lease_s * 1000))
        self._cleanups: set[asyncio.Task[None]] = set()
        self.unavailable = 0  # requests refused with 503 because the store was down

    async def begin(self, workspace_id: str, key: str, fingerprint: bytes, scope: str = "") -> Begin:
        if not key or len(key) > MAX_KEY_LENGTH:
            raise GatewayError(
                400,
                "invalid_request",
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
                param="Idempotency-Key",
            )
        hashed = key_hash(key, scope)
        token = secrets.token_hex(16)
        try:
            outcome, blob = await self._state.idem_begin(
                workspace_id, hashed, fingerprint, token, self._lease_ms
            )
        except asyncio.CancelledError:
            # The client left while the store answered (the request's stream was reset): a claim
            # that landed is nobody's now. Drop it at once, or the retry would see 409 for a lease.
            self._cleanup_later(workspace_id, hashed, token, _AT_ONCE)
            raise
        except StateUnavailable:
            self.unavailable += 1
            # The claim may have landed before the reply was lost: drop it once the store answers,
            # or the client's retry would see 409 for a whole lease.
            self._cleanup_later(workspace_id, hashed, token, _ONCE_BACK)
            raise GatewayError(
                503,
                "idempotency_unavailable",
                "Idempotency keys cannot be honoured right now; retry shortly.",
            ) from None
        if outcome == "proceed":
            return Proceed(token)
        if outcome == "replay" and blob is not None:
            stored = StoredResponse.load(blob)
            headers = [(k, v) for k, v in stored.headers if k.lower() != IDEMPOTENT_REPLAYED_HEADER]
            headers.append((IDEMPOTENT_REPLAYED_HEADER, "true"))
            return Replay(StoredResponse(stored.status, headers, stored.body, stored.stream))
        if outcome == "mismatch":
            raise GatewayError(
                422,
                "idempotency_key_reused",
                "This Idempotency-Key was already used with a different request body.",
                param="Idempotency-Key",
            )
        raise GatewayError(
            409,
            "idempotency_key_in_use",
            "A request with this Idempotency-Key is still being processed.",
            param="Idempotency-Key",
        )

    async def complete(
        self, workspace_id: str, key: str, stored: StoredResponse, token: str | None = None, scope: str = ""
    ) -> bool:
        """Keep ``stored`` for ``ttl_s``. Without ``token`` any pending claim is completed; with it,
        only our own (a claim that lost its lease to a retry is left alone). False if not stored."""
        try:
            return await self._state.idem_complete(
                workspace_id, key_hash(key, scope), token, stored.dump(), self._ttl_ms
            )
        except StateUnavailable:
            log.warning("idempotency: response not stored; retries see 409 until the lease ends")
            return False

    async def release(self, workspace_id: str, key: str, token: str | None = None, scope: str = "") -> bool:
        """Let a retry with this key proceed. False if there was no pending claim to drop."""
        try:
            return await self._state.idem_release(workspace_id, key_hash(key, scope), token)
        except StateUnavailable:
            log.warning("idempotency: claim not released; retries see 409 until the lease ends")
            return False

    def _cleanup_later(self, workspace_id: str, hashed: str, token: str, delays: tuple[float, ...]) -> None:
        """Release our claim, if it landed, in the background: retried after each of ``delays``."""
        if len(self._cleanups) >= _MAX_CLEANUPS:  # a long outage: the leases will expire anyway
            return

        async def cleanup() -> None:
            for delay in delays:
                await asyncio.sleep(delay)
                try:
                    await self._state.idem_release(workspace_id, hashed, token)
                    return
                except StateUnavailable:
                    continue

        task = asyncio.get_running_loop().create_task(cleanup())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def close(self) -> None:
        """Stop pending cleanups (they only matter while the process lives)."""
        for task in list(self._cleanups):
            task.cancel()
        await asyncio.gather(*self._cleanups, return_exceptions=True)
