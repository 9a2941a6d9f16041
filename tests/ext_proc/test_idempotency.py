"""Idempotency keys against Redis (also as two replicas) and the in-process store."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time

import pytest
from redis.asyncio import Redis

from ext_proc.errors import GatewayError
from ext_proc.idempotency import (
    Idempotency,
    Proceed,
    Replay,
    StoredResponse,
    key_hash,
    should_store,
)
from ext_proc.shared_state import RedisState, StateUnavailable, open_state

FP = hashlib.sha256(b"POST /v1/chat/completions {}").digest()
OTHER_FP = hashlib.sha256(b'POST /v1/chat/completions {"x":1}').digest()


def response(
    body: bytes = b'{"id":"chatcmpl-1"}', *, status: int = 200, stream: bool = False
) -> StoredResponse:
    return StoredResponse(
        status,
        [("content-type", "application/json"), ("x-credits-used", "0.000375"), ("x-model-used", "gpt-4o")],
        body,
        stream,
    )


async def proceed(idem: Idempotency, workspace: str, key: str, fp: bytes = FP) -> Proceed:
    outcome = await idem.begin(workspace, key, fp)
    assert isinstance(outcome, Proceed), outcome
    return outcome


async def error_of(coro: object) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        await coro  # type: ignore[misc]
    return info.value


async def test_one_of_many_concurrent_requests_proceeds(backend) -> None:
    replicas = [Idempotency(backend.state), Idempotency(backend.replica())]
    outcomes = await asyncio.gather(
        *(replicas[i % 2].begin("ws1", "key-1", FP) for i in range(40)), return_exceptions=True
    )
    proceeds = [o for o in outcomes if isinstance(o, Proceed)]
    conflicts = [o for o in outcomes if isinstance(o, GatewayError)]
    assert len(proceeds) == 1
    assert len(conflicts) == 39
    assert {(e.status, e.code) for e in conflicts} == {(409, "idempotency_key_in_use")}


async def test_finished_request_is_replayed_with_its_headers(backend) -> None:
    idem = Idempotency(backend.state)
    first = await proceed(idem, "ws1", "k")
    assert await idem.complete("ws1", "k", response(), first.token)

    # another replica sees the same record
    replay = await Idempotency(backend.replica()).begin("ws1", "k", FP)
    assert isinstance(replay, Replay)
    assert replay.stored.status == 200
    assert replay.stored.body == b'{"id":"chatcmpl-1"}'
    assert replay.stored.stream is False
    assert replay.stored.headers == [*response().headers, ("idempotent-replayed", "true")]


async def test_stream_transcript_replays_byte_for_byte(backend) -> None:
    transcript = b"".join(
        b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"delta":{"content":"%d\\n"}}]}\n\n' % i
        for i in range(20_000)
    )
    transcript += b'data: {"choices":[],"credits_used":0.01}\n\ndata: [DONE]\n\n' + os.urandom(1 << 20)
    idem = Idempotency(backend.state)
    first = await proceed(idem, "ws1", "stream-key")
    stored = StoredResponse(200, [("content-type", "text/event-stream")], transcript, True)
    assert await idem.complete("ws1", "stream-key", stored, first.token)
    replay = await idem.begin("ws1", "stream-key", FP)
    assert isinstance(replay, Replay)
    assert replay.stored.stream is True
    assert replay.stored.body == transcript
    assert ("idempotent-replayed", "true") in replay.stored.headers


async def test_replay_marker_is_never_doubled(backend) -> None:
    idem = Idempotency(backend.state)
    first = await proceed(idem, "ws1", "k")
    stored = StoredResponse(200, [("Idempotent-Replayed", "true"), ("x-credits-used", "0")], b"{}", False)
    await idem.complete("ws1", "k", stored, first.token)
    replay = await idem.begin("ws1", "k", FP)
    assert isinstance(replay, Replay)
    assert replay.stored.headers == [("x-credits-used", "0"), ("idempotent-replayed", "true")]


async def test_stored_client_error_is_replayed(backend) -> None:
    idem = Idempotency(backend.state)
    first = await proceed(idem, "ws1", "k")
    body = b'{"error":{"code":"invalid_request"}}'
    assert await idem.complete("ws1", "k", response(body, status=400), first.token)
    replay = await idem.begin("ws1", "k", FP)
    assert isinstance(replay, Replay)
    assert (replay.stored.status, replay.stored.body) == (400, body)


async def test_different_body_is_422_in_flight_and_after(backend) -> None:
    idem = Idempotency(backend.state)
    first = await proceed(idem, "ws1", "k")
    err = await error_of(idem.begin("ws1", "k", OTHER_FP))
    assert (err.status, err.code, err.param) == (422, "idempotency_key_reused", "Idempotency-Key")
    await idem.complete("ws1", "k", response(), first.token)
    err = await error_of(idem.begin("ws1", "k", OTHER_FP))
    assert (err.status, err.code) == (422, "idempotency_key_reused")


async def test_release_lets_a_retry_proceed(backend) -> None:
    idem = Idempotency(backend.state)
    first = await proceed(idem, "ws1", "k")
    assert (await error_of(idem.begin("ws1", "k", FP))).status == 409
    assert not await idem.release("ws1", "k", "someone-else")  # not the owner: nothing happens
    assert (await error_of(idem.begin("ws1", "k", FP))).status == 409
    assert await idem.release("ws1", "k", first.token)
    retry = await proceed(idem, "ws1", "k")
    assert retry.token != first.token
    # a stored response is never released
    await idem.complete("ws1", "k", response())
    assert not await idem.release("ws1", "k")
    assert isinstance(await idem.begin("ws1", "k", FP), Replay)


async def test_a_claim_whose_reply_was_cancelled_is_released_at_once(backend) -> None:
    """The client left while the store answered (its stream reset): the claim landed, but
    nobody holds it. A retry must not see 409 for the whole lease."""
    state = backend.state
    landed = asyncio.Event()
    claim = state.idem_begin

    async def slow_reply(*args: object) -> tuple[str, bytes | None]:
        result = await claim(*args)  # type: ignore[arg-type]
        landed.set()
        await asyncio.sleep(60)
        return result

    state.idem_begin = slow_reply  # type: ignore[method-assign]
    idem = Idempotency(state)
    begin = asyncio.ensure_future(idem.begin("ws1", "key-c", FP))
    await asyncio.wait_for(landed.wait(), 5)
    begin.cancel()
    with pytest.raises(asyncio.CancelledError):
        await begin
    state.idem_begin = claim  # type: ignore[method-assign]
    await asyncio.wait_for(asyncio.gather(*idem._cleanups), 5)
    await proceed(idem, "ws1", "key-c")


async def test_brief_signatures_without_token(backend) -> None:
    idem = Idempotency(backend.state)
    await proceed(idem, "ws1", "a")
    assert await idem.release("ws1", "a")
    await proceed(idem, "ws1", "a")
    assert await idem.complete("ws1", "a", response())
    assert not await idem.complete("ws1", "a", response(b"second"))  # already stored: first one wins
    replay = await idem.begin("ws1", "a", FP)
    assert isinstance(replay, Replay) and replay.stored.body == response().body


async def test_records_expire_after_their_ttl(backend) -> None:
    idem = Idempotency(backend.state, ttl_s=0.5)
    first = await proceed(idem, "ws1", "k")
    await idem.complete("ws1", "k", response(), first.token)
    assert isinstance(await idem.begin("ws1", "k", FP), Replay)
    await asyncio.sleep(0.6)
    await proceed(idem, "ws1", "k", OTHER_FP)  # gone: even another body may use the key now


async def test_expired_lease_hands_the_key_over_and_the_old_owner_cannot_overwrite(backend) -> None:
    stale = await proceed(Idempotency(backend.state, lease_s=0.2), "ws1", "k")
    await asyncio.sleep(0.3)
    idem = Idempotency(backend.replica())
    fresh = await proceed(idem, "ws1", "k")
    assert not await idem.complete("ws1", "k", response(b"stale"), stale.token)
    assert not await idem.release("ws1", "k", stale.token)
    assert await idem.complete("ws1", "k", response(b"fresh"), fresh.token)
    replay = await idem.begin("ws1", "k", FP)
    assert isinstance(replay, Replay) and replay.stored.body == b"fresh"


async def test_keys_are_scoped_to_the_workspace(backend) -> None:
    idem = Idempotency(backend.state)
    first = await proceed(idem, "ws-a", "shared-key")
    await proceed(idem, "ws-b", "shared-key", OTHER_FP)  # neither 409 nor 422
    await idem.complete("ws-a", "shared-key", response(b"a"), first.token)
    assert (await error_of(idem.begin("ws-b", "shared-key", FP))).status == 422  # ws-b's own record
    replay = await idem.begin("ws-a", "shared-key", FP)
    assert isinstance(replay, Replay) and replay.stored.body == b"a"
    # an id crafted to look like another workspace's key prefix stays apart
    await proceed(idem, "ws-a}:idem:x", "shared-key")


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_invalid_key_is_400(backend, key: str) -> None:
    err = await error_of(Idempotency(backend.state).begin("ws1", key, FP))
    assert (err.status, err.code, err.param) == (400, "invalid_request", "Idempotency-Key")


async def test_longest_key_and_unicode_are_fine(backend) -> None:
    idem = Idempotency(backend.state)
    await proceed(idem, "ws1", "k" * 255)
    await proceed(idem, "ws1", "clé 🔑 with spaces")


async def test_redis_key_names_hold_hashes_not_client_keys(redis_backend, redis_client: Redis) -> None:
    backend = redis_backend
    idem = Idempotency(backend.state)
    await proceed(idem, "ws1", "secret-ish client key")
    names = [k.decode() async for k in redis_client.scan_iter(match=f"{backend.prefix}:*")]
    assert names == [f"{backend.prefix}:{{ws1}}:idem:{key_hash('secret-ish client key')}"]
    assert 0 < await redis_client.pttl(names[0]) <= 600_000  # the lease, not 24 h, while in flight


async def test_stored_record_is_kept_24_hours(redis_backend, redis_client: Redis) -> None:
    backend = redis_backend
    idem = Idempotency(backend.state)
    first = await proceed(idem, "ws1", "k")
    await idem.complete("ws1", "k", response(), first.token)
    ttl = await redis_client.pttl(f"{backend.prefix}:{{ws1}}:idem:{key_hash('k')}")
    assert 86_390_000 < ttl <= 86_400_000


def test_which_statuses_are_stored() -> None:
    assert all(should_store(s) for s in (200, 201, 204, 400, 401, 403, 404, 413, 422))
    assert not any(should_store(s) for s in (408, 409, 425, 429, 499, 500, 502, 503, 504, 100))


def test_stored_response_round_trips() -> None:
    stored = StoredResponse(201, [("a", "1\n2"), ("b", "ü")], b"\n\x00body\n", True)
    assert StoredResponse.load(stored.dump()) == stored


# -- the store is down -----------------------------------------------------------


async def test_dead_redis_is_503_and_never_a_second_charge(dead_redis_url: str) -> None:
    state = open_state(dead_redis_url)
    idem = Idempotency(state)
    try:
        started = time.monotonic()
        err = await error_of(idem.begin("ws1", "k", FP))
        assert (err.status, err.code) == (503, "idempotency_unavailable")
        assert idem.unavailable == 1
        assert not await idem.complete("ws1", "k", response())  # logged, not raised
        assert not await idem.release("ws1", "k")
        assert time.monotonic() - started < 1.0
    finally:
        await idem.close()
        await state.close()


async def test_unresponsive_redis_fails_fast() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        state = RedisState(f"redis://127.0.0.1:{listener.getsockname()[1]}/0", timeout_s=0.25)
        idem = Idempotency(state)
        try:
            started = time.monotonic()
            assert (await error_of(idem.begin("ws1", "k", FP))).status == 503
            assert time.monotonic() - started < 1.5  # one 0.25 s socket timeout, not client retries
        finally:
            await idem.close()
            await state.close()


class LostReply(RedisState):
    """The claim reaches Redis but its reply is lost once (a timeout after the script ran)."""

    lose = 1

    async def idem_begin(
        self, workspace_id: str, key_hash: str, fingerprint: bytes, token: str, lease_ms: int
    ) -> tuple[str, bytes | None]:
        result = await super().idem_begin(workspace_id, key_hash, fingerprint, token, lease_ms)
        if self.lose:
            self.lose -= 1
            raise StateUnavailable("reply lost")
        return result


async def test_claim_with_a_lost_reply_is_cleaned_up(redis_backend, redis_url: str) -> None:
    backend = redis_backend
    state = LostReply(redis_url, prefix=backend.prefix)
    idem = Idempotency(state)
    try:
        assert (await error_of(idem.begin("ws1", "k", FP))).status == 503
        # the orphaned claim would answer 409 for 10 minutes; the cleanup drops it
        assert (await error_of(Idempotency(backend.state).begin("ws1", "k", FP))).status == 409
        deadline = time.monotonic() + 3
        while True:
            try:
                await proceed(Idempotency(backend.state), "ws1", "k")
                break
            except GatewayError:
                assert time.monotonic() < deadline, "orphaned claim never released"
                await asyncio.sleep(0.1)
    finally:
        await idem.close()
        await state.close()
