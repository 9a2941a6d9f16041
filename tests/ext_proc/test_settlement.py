"""The exit's parts (ext_proc/settlement.py): what is charged without provider usage, what an
idempotent replay repeats, and the idempotency step, on the real in-process store.

The exit as a whole -- one record, the limits settled with the charge, the key kept or
released -- is walked state by state in tests/ext_proc/test_lifecycle.py.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from ext_proc.endpoints import chat_completions
from ext_proc.exchange import Services
from ext_proc.idempotency import Idempotency, Proceed, Replay, StoredResponse
from ext_proc.limits import Limiter
from ext_proc.settlement import Claim, answer_usage, completion_chars, estimate, keep_or_release, replayable
from ext_proc.shared_state import MemoryState
from ext_proc.translators.base import Usage

CHAT = chat_completions.ENDPOINT
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "12345678"}]}  # 4 + 2 = 6 tokens


def test_nothing_served_is_nothing_charged_but_the_rejection_is_kept():
    assert estimate(CHAT, None, 0, REQUEST, served=False) == Usage()
    rejected = Usage(input_tokens=-1, rejected="prompt_tokens=-1 is negative")
    assert estimate(CHAT, rejected, 40, REQUEST, served=False) == Usage(
        rejected="prompt_tokens=-1 is negative"
    )


def test_without_provider_usage_input_comes_from_the_request_and_output_from_the_text():
    assert estimate(CHAT, None, 9, REQUEST, served=True) == Usage(6, 0, 3, 0, 0, estimated=True)  # ceil(9/4)
    rejected = Usage(input_tokens=10**15, images=2, rejected="too many")
    assert estimate(CHAT, rejected, 4, REQUEST, served=True) == Usage(
        6, 0, 1, 0, 2, estimated=True, rejected="too many"
    )


def test_the_providers_valid_counts_so_far_are_kept_where_larger():
    partial = Usage(input_tokens=100, cached_input_tokens=40, output_tokens=7, reasoning_tokens=5, images=1)
    assert estimate(CHAT, partial, 4, REQUEST, served=True) == Usage(100, 40, 7, 5, 1, estimated=True)
    assert estimate(CHAT, partial, 400, REQUEST, served=True).output_tokens == 100  # the text says more
    no_prompt = Usage(output_tokens=1)
    assert estimate(CHAT, no_prompt, 4, REQUEST, served=True).input_tokens == 6


def test_a_buffered_answer_is_charged_its_usage_or_the_estimate():
    given = Usage(input_tokens=3, output_tokens=4)
    assert answer_usage(CHAT, given, b"{}", REQUEST) is given
    answer = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"abcde"}}]}'
    assert completion_chars(CHAT, answer) == 5 and completion_chars(CHAT, b"not json") == 0
    assert answer_usage(CHAT, None, answer, REQUEST) == Usage(6, 0, 2, 0, 0, estimated=True)
    assert answer_usage(CHAT, Usage(rejected="x"), answer, REQUEST).rejected == "x"


def test_a_replay_repeats_the_answers_headers_and_says_it_is_one():
    headers = [
        ("content-type", "application/json"),
        ("x-credits-used", "0.5"),
        ("x-ratelimit-limit-requests", "9"),
    ]
    assert replayable(headers, None, "", False, Decimal("0.5")) == [
        ("content-type", "application/json"),
        ("x-credits-used", "0.5"),
        ("idempotent-replayed", "true"),
    ]
    # A stream: its content type, and no credits header (the credits are in its last chunk).
    assert replayable([], None, "gpt-4o", True, Decimal("0.5")) == [
        ("content-type", "text/event-stream"),
        ("x-fallback-from", "gpt-4o"),
        ("idempotent-replayed", "true"),
    ]
    assert ("x-credits-used", "0.25") in replayable([], None, "", False, Decimal("0.25"))
    assert not any(k == "x-credits-used" for k, _ in replayable([], None, "", False, Decimal(0)))


@pytest.fixture
def world() -> tuple[Services, Idempotency]:
    state = MemoryState(prefix="settle")
    idempotency = Idempotency(state)
    return Services(lambda record: None, Limiter(state), idempotency), idempotency


async def _claim(idempotency: Idempotency) -> Claim:
    outcome = await idempotency.begin("w", "key", b"f", "mb")
    assert isinstance(outcome, Proceed)
    return Claim("w", "key", outcome.token, "mb")


async def test_a_delivered_answer_is_kept_for_the_retry(world):
    services, idempotency = world
    stored = StoredResponse(200, [("content-type", "application/json")], b"{}", False)
    await keep_or_release(services, await _claim(idempotency), stored)
    again = await idempotency.begin("w", "key", b"f", "mb")
    assert isinstance(again, Replay) and again.stored.body == b"{}"


async def test_anything_else_frees_the_key(world):
    services, idempotency = world
    await keep_or_release(services, await _claim(idempotency), None)
    assert isinstance(await idempotency.begin("w", "key", b"f", "mb"), Proceed)


class NeverStores(MemoryState):
    """A store whose ``complete`` never answers (a Redis gone quiet); claims and releases work."""

    async def idem_complete(self, *args: object) -> bool:
        await asyncio.Event().wait()
        return True


async def test_a_cancelled_wait_frees_the_key_in_the_background():
    state = NeverStores(prefix="settle")
    idempotency = Idempotency(state)
    services = Services(lambda record: None, Limiter(state), idempotency)
    step = asyncio.ensure_future(
        keep_or_release(services, await _claim(idempotency), StoredResponse(200, [], b"", False))
    )
    await asyncio.sleep(0)
    step.cancel()  # the client's stream reset while the store was answering
    await asyncio.gather(step, return_exceptions=True)
    await asyncio.gather(*services.background)
    assert isinstance(await idempotency.begin("w", "key", b"f", "mb"), Proceed)
