"""Credits from usage and catalog prices, in exact decimal arithmetic.

1 credit = US$1. An amount is computed exactly, then quantized to 10^-12
credits (a pico-credit, the store's unit) so that the header, the credits
chunk and the usage record always carry the same number.

What is priced depends on the endpoint: each one names its *meters*
(``Endpoint.meters`` in ext_proc/endpoints/), the parts of its usage that cost
something — input tokens for embeddings, input and output tokens for chat, and
images besides for image generation, characters of ``input`` for speech, seconds
of audio for transcriptions and translations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from ext_proc.translators.base import Usage

_MILLION = Decimal(1_000_000)
_THOUSAND = Decimal(1000)
_PICO = Decimal("1e-12")
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Prices:
    input_per_mtok: Decimal | None = None
    cached_input_per_mtok: Decimal | None = None
    output_per_mtok: Decimal | None = None
    per_image: Decimal | None = None
    per_audio_second: Decimal | None = None  # transcriptions and translations: per second heard
    per_mchar: Decimal | None = None  # speech: per million characters spoken
    # Per token, derived once per configuration change so that a request divides nothing.
    # Exact: dividing by 10^6 only moves the decimal point. Cached input falls back to the
    # input price when unpriced.
    input_per_token: Decimal = field(init=False, repr=False, compare=False)
    cached_input_per_token: Decimal = field(init=False, repr=False, compare=False)
    output_per_token: Decimal = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        per_token = (self.input_per_mtok or ZERO) / _MILLION
        cached = self.cached_input_per_mtok
        object.__setattr__(self, "input_per_token", per_token)
        object.__setattr__(self, "cached_input_per_token", per_token if cached is None else cached / _MILLION)
        object.__setattr__(self, "output_per_token", (self.output_per_mtok or ZERO) / _MILLION)

    @classmethod
    def parse(
        cls, input_: str, cached: str, output: str, image: str, audio_second: str = "", mchar: str = ""
    ) -> Prices:
        return cls(_dec(input_), _dec(cached), _dec(output), _dec(image), _dec(audio_second), _dec(mchar))


def _dec(text: str) -> Decimal | None:
    return Decimal(text) if text else None


# One priced part of a request's usage, in credits before the workspace's multiplier.
Meter = Callable[[Usage, Prices], Decimal]


def input_tokens_cost(usage: Usage, prices: Prices) -> Decimal:
    """Prompt tokens; cached ones at the cached price."""
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    return (usage.input_tokens - cached) * prices.input_per_token + cached * prices.cached_input_per_token


def output_tokens_cost(usage: Usage, prices: Prices) -> Decimal:
    """Completion tokens, reasoning included."""
    return usage.output_tokens * prices.output_per_token


def images_cost(usage: Usage, prices: Prices) -> Decimal:
    """Images made, at the model's per-image price (nothing when it has none)."""
    if usage.images and prices.per_image is not None:
        return usage.images * prices.per_image
    return ZERO


def characters_cost(usage: Usage, prices: Prices) -> Decimal:
    """Characters of text spoken, at the model's price per million characters."""
    if usage.characters and prices.per_mchar is not None:
        return usage.characters * prices.per_mchar / _MILLION
    return ZERO


def audio_seconds_cost(usage: Usage, prices: Prices) -> Decimal:
    """Audio heard, at the model's price per second; measured in milliseconds, so exact."""
    if usage.audio_ms and prices.per_audio_second is not None:
        return usage.audio_ms * prices.per_audio_second / _THOUSAND
    return ZERO


# Everything a request can use today, each at its price.
TOKENS_AND_IMAGES: tuple[Meter, ...] = (input_tokens_cost, output_tokens_cost, images_cost)


def credits(
    usage: Usage, prices: Prices, multiplier: Decimal, meters: Iterable[Meter] = TOKENS_AND_IMAGES
) -> Decimal:
    """What a request costs: the sum of its endpoint's meters (by default every token and image
    it used), times the workspace's multiplier."""
    total = ZERO
    for meter in meters:
        total += meter(usage, prices)
    return (total * multiplier).quantize(_PICO, rounding=ROUND_HALF_UP)


def format_credits(amount: Decimal) -> str:
    """Plain decimal notation without trailing zeros: ``0.000375``, ``0``, ``12``."""
    if not amount:
        return "0"
    return format(amount.normalize(), "f")
