"""Credits from usage and catalog prices, in exact decimal arithmetic.

1 credit = US$1. An amount is computed exactly, then quantized to 10^-12
credits (a pico-credit, the store's unit) so that the header, the credits
chunk and the usage record always carry the same number.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from ext_proc.translators.base import Usage

_MILLION = Decimal(1_000_000)
_PICO = Decimal("1e-12")
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Prices:
    input_per_mtok: Decimal | None = None
    cached_input_per_mtok: Decimal | None = None
    output_per_mtok: Decimal | None = None
    per_image: Decimal | None = None

    @classmethod
    def parse(cls, input_: str, cached: str, output: str, image: str) -> Prices:
        return cls(_dec(input_), _dec(cached), _dec(output), _dec(image))


def _dec(text: str) -> Decimal | None:
    return Decimal(text) if text else None


def credits(usage: Usage, prices: Prices, multiplier: Decimal) -> Decimal:
    """What a request costs. Cached input falls back to the input price when unpriced."""
    input_price = prices.input_per_mtok or ZERO
    cached_price = prices.cached_input_per_mtok if prices.cached_input_per_mtok is not None else input_price
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    total = (
        (usage.input_tokens - cached) * input_price
        + cached * cached_price
        + usage.output_tokens * (prices.output_per_mtok or ZERO)
    ) / _MILLION
    if usage.images and prices.per_image is not None:
        total += usage.images * prices.per_image
    return (total * multiplier).quantize(_PICO, rounding=ROUND_HALF_UP)


def format_credits(amount: Decimal) -> str:
    """Plain decimal notation without trailing zeros: ``0.000375``, ``0``, ``12``."""
    if not amount:
        return "0"
    return format(amount.normalize(), "f")
