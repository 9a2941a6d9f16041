"""The request's one exit: charge, limits, idempotency record and usage record, together.

When the exchange reaches a final state (FINISHED, FAILED or ABANDONED, ext_proc/lifecycle.py)
it calls :func:`settle`, once; the lifecycle allows no move out of a final state, so nothing is
settled twice. :func:`settle` ends the request's spans when tracing is on (every request's,
ext_proc/tracing.py), and for an authenticated request it

1. makes sure what was served is charged: a stream that ended without its last chunk (the
   client left, Envoy reset it, the gateway failed) is charged here, from what reached the
   client (:func:`stream_usage`); a buffered answer was charged before its headers went out;
2. settles the limits (the tpm reservation swapped for the tokens charged, the credits added
   to the budget) with exactly the amount charged;
3. writes the usage record, with the same tokens and credits;
4. hands back the idempotency step: keep the response for replay when the client got it in
   full and its status is one a retry should get (ext_proc/idempotency.py ``should_store``),
   else release the key. The exchange awaits it before the client hears the end (or, once
   the client is gone, runs it in the background).

Steps 1-3 happen before anything is awaited, so a request cancelled while the idempotency
store answers is still billed and recorded, and its key is released in the background.

Charging (ext_proc/token_estimate.py for the estimator, the endpoint for which text counts):
the provider's usage when it is there, valid and complete; otherwise an estimate flagged
``usage_estimated`` (and ``usage_rejected`` saying why the provider's numbers were refused):
the request's input tokens and the output tokens of the text the client received, keeping
the provider's valid counts where they are larger. Nothing served, nothing charged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
from infery_proto.v1 import usage_pb2
from infery_proto.wire import (
    CREDITS_USED_HEADER,
    FALLBACK_FROM_HEADER,
    IDEMPOTENT_REPLAYED_HEADER,
    MODEL_USED_HEADER,
)

from ext_proc import header_policy
from ext_proc.config import Model
from ext_proc.endpoints.base import Endpoint
from ext_proc.idempotency import Idempotency, StoredResponse, should_store
from ext_proc.metering import credits, format_credits
from ext_proc.token_estimate import tokens_for_chars
from ext_proc.translators.base import Usage

if TYPE_CHECKING:
    from ext_proc.exchange import Exchange, Services
    from ext_proc.stream_answer import StreamAnswer


@dataclass(frozen=True, slots=True)
class Claim:
    """An idempotency key this request holds (ext_proc/idempotency.py ``Proceed``)."""

    workspace_id: str
    key: str
    token: str
    scope: str  # whose replays: the member's, or the whole workspace's ("")


# -- charging ---------------------------------------------------------------


def charge(ex: Exchange, usage: Usage) -> None:
    """What the request is charged: ``usage`` at the serving model's prices and the workspace's multiplier."""
    assert ex.model is not None and ex.key is not None and ex.endpoint is not None
    ex.usage = usage
    ex.credits = credits(usage, ex.model.prices, ex.key.workspace.price_multiplier, ex.endpoint.meters)


def answer_usage(endpoint: Endpoint, provider: Usage | None, answer: bytes, request: dict[str, Any]) -> Usage:
    """What a buffered answer is charged: the provider's usage, or the estimate without (believable) usage."""
    if provider is None or provider.rejected:
        return estimate(endpoint, provider, completion_chars(endpoint, answer), request, served=True)
    return provider


def stream_usage(answer: StreamAnswer, last: bytes | None, request: dict[str, Any]) -> Usage:
    """What a stream served is charged: the provider's usage when the stream completed with valid
    usage, else the estimate from the request and the text the client received (``last``, the
    final chunk about to go out, included)."""
    provider = answer.translator.usage
    clean = answer.completed
    if clean and provider is not None and not provider.rejected:
        return provider
    chars = answer.served_chars(last)
    return estimate(answer.endpoint, provider, chars, request, served=clean or chars > 0)


def estimate(
    endpoint: Endpoint, provider: Usage | None, chars: int, request: dict[str, Any], *, served: bool
) -> Usage:
    """What to charge without (valid, complete) provider usage (ext_proc/token_estimate.py).

    The provider's own counts so far are kept where they are valid (its prompt tokens, and
    its output tokens when more than the text counted); the request's estimate stands in for
    missing prompt tokens, the delivered text's for output. Nothing served: nothing charged.
    """
    rejected = provider.rejected if provider is not None else ""
    valid = provider if provider is not None and not rejected else None
    if not served:
        return Usage(rejected=rejected)
    output = tokens_for_chars(chars)
    if valid is not None:
        return Usage(
            input_tokens=valid.input_tokens or endpoint.input_tokens(request),
            cached_input_tokens=valid.cached_input_tokens,
            output_tokens=max(valid.output_tokens, output),
            reasoning_tokens=valid.reasoning_tokens,
            images=valid.images,
            estimated=True,
        )
    images = provider.images if provider is not None else 0
    return Usage(endpoint.input_tokens(request), 0, output, 0, images, estimated=True, rejected=rejected)


def completion_chars(endpoint: Endpoint, body: bytes) -> int:
    """Text characters of a translated (OpenAI-shaped) answer, as its endpoint counts them."""
    try:
        return endpoint.served_chars(orjson.loads(body))
    except orjson.JSONDecodeError:
        return 0


# -- the exit -----------------------------------------------------------------


def settle(
    ex: Exchange, *, keep: bool, headers: list[tuple[str, str]] | None
) -> Coroutine[Any, Any, None] | None:
    """Settles a request that has just reached its final state; the idempotency step is returned.

    ``keep``: the client got the whole response (``headers`` are the ones it got), so a
    retry may be answered with it if its status allows. Unauthenticated requests and the
    model list are not metered: nothing to settle beyond their spans.
    """
    key = ex.key
    if key is not None and ex.usage is None and ex.answer is not None and ex.model is not None:
        charge(ex, stream_usage(ex.answer, None, ex.request_body))  # served, not yet charged
    trace = ex.trace
    if trace is not None:  # the request's spans end with the figures the usage record gets
        trace.end(ex)
    if key is None:
        return None
    services = ex._services
    admission = ex.admission
    if admission is not None and admission.needs_settling:
        usage = ex.usage or Usage()
        services.later(
            services.limiter.settle(admission, usage.input_tokens + usage.output_tokens, ex.credits)
        )
    services.record(usage_record(ex))
    claim, ex.claim = ex.claim, None
    if claim is None:
        return None
    stored = None
    if keep and should_store(ex.status):
        replayed = replayable(headers or [], ex.model, ex.fallback_from, ex.answer is not None, ex.credits)
        stored = StoredResponse(ex.status, replayed, b"".join(ex.transcript or ()), ex.answer is not None)
    return keep_or_release(services, claim, stored)


async def keep_or_release(services: Services, claim: Claim, stored: StoredResponse | None) -> None:
    """Completes the claim with ``stored`` (else releases it); cancelled, it releases in the background."""
    idempotency = services.idempotency
    try:
        if stored is not None:
            await idempotency.complete(claim.workspace_id, claim.key, stored, claim.token, claim.scope)
        else:
            await release(idempotency, claim)
    except asyncio.CancelledError:
        # Reset while the store answered: a retry must not wait for the lease to end. (A
        # release never drops a response that was stored.)
        services.later(release(idempotency, claim))
        raise


async def release(idempotency: Idempotency, claim: Claim) -> None:
    await idempotency.release(claim.workspace_id, claim.key, claim.token, claim.scope)


def usage_record(ex: Exchange) -> usage_pb2.UsageRecord:
    """The request's usage record (one per request id), with what it was charged."""
    assert ex.key is not None
    usage = ex.usage or Usage()
    started = ex.started
    answer = ex.answer
    ttft = answer.ttft if answer is not None else 0.0
    model = ex.model
    return usage_pb2.UsageRecord(
        request_id=ex.request_id,
        started_at_ms=int(started * 1000),
        workspace_id=ex.key.workspace.id,
        member_id=ex.key.member_id,
        key_id=ex.key.id,
        endpoint=ex.path,
        model_requested=ex.model_requested,
        model_used=model.slug if model else "",
        provider=model.provider.name if model else "",
        fallback_from=ex.fallback_from,
        status=ex.status,
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        output_tokens=usage.output_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        credits=format_credits(ex.credits),
        latency_ms=(time.time() - started) * 1000,
        ttft_ms=(ttft - started) * 1000 if ttft else 0.0,
        idempotent_replay=ex.replayed,
        stream=ex.stream,
        error_code=ex.error_code,  # also set when a stream failed after its 200 headers
        usage_estimated=usage.estimated,
        usage_rejected=usage.rejected,
        characters=usage.characters,
        audio_ms=usage.audio_ms,
        batch_id=ex.batch_line.batch_id if ex.batch_line else "",
        custom_id=ex.batch_line.custom_id if ex.batch_line else "",
        parent_request_id=ex.parent_request_id,
    )


def replayable(
    headers: list[tuple[str, str]], model: Model | None, fallback_from: str, stream: bool, charged: Decimal
) -> list[tuple[str, str]]:
    """The headers an idempotent replay repeats, plus its marker."""
    kept = {k: v for k, v in headers if k in header_policy.REPLAYED}
    if stream:
        kept["content-type"] = "text/event-stream"
    kept.setdefault("content-type", "application/json")
    if model is not None:
        kept.setdefault(MODEL_USED_HEADER, model.slug)
    if fallback_from:
        kept.setdefault(FALLBACK_FROM_HEADER, fallback_from)
    if not stream and CREDITS_USED_HEADER not in kept and charged:
        kept[CREDITS_USED_HEADER] = format_credits(charged)
    return [*kept.items(), (IDEMPOTENT_REPLAYED_HEADER, "true")]
