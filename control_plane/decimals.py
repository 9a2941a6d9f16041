"""Exact decimal handling for prices, budgets, multipliers and credits.

Money never passes through a float: JSON carries decimal strings, the database stores
strings (prices) or integer pico-credits (usage, so that SQL SUMs stay exact).
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

PICO = Decimal("1e-12")
_PLAIN = re.compile(r"^-?\d+(\.\d+)?$")


def parse_decimal(value: object) -> Decimal:
    """A finite Decimal from a JSON string or integer.

    Floats are refused: by the time a JSON number is a float its exact value may already
    be lost, so the API asks for strings like "0.15".
    """
    if isinstance(value, (bool, float)):
        raise ValueError('decimals must be JSON strings such as "0.15"')
    if isinstance(value, int):
        return Decimal(value)
    if not isinstance(value, str):
        raise ValueError("must be a decimal string")
    try:
        result = Decimal(value.strip())
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not result.is_finite():
        raise ValueError(f"{value!r} is not a finite decimal number")
    # Bounded before anything expands it: "1e999999999" would become a gigabyte of digits.
    if result and abs(result.adjusted()) > _MAX_EXPONENT:
        raise ValueError(f"{value!r} is out of range (at most 18 digits either side of the point)")
    return result


_MAX_EXPONENT = 18


def plain_decimal(number: Decimal, original: object) -> str:
    """The value as the client wrote it when that is plain notation ("2.50" stays "2.50"),
    else without exponent ("1E-7" becomes "0.0000001"): exact either way, and unsurprising."""
    if isinstance(original, str) and _PLAIN.match(original.strip()):
        return original.strip()
    return format(number, "f")


def format_decimal(value: Decimal) -> str:
    """Plain notation without exponent or redundant zeros ("0.000375", "2.5", "0")."""
    normalized = value.normalize()
    if normalized == 0:
        return "0"
    return format(normalized, "f")


def to_pico(value: Decimal) -> int:
    """Integer pico-credits, rounding only beyond the 12th decimal place."""
    return int(value.quantize(PICO, rounding=ROUND_HALF_EVEN).scaleb(12))


def from_pico(value: int) -> str:
    return format_decimal(Decimal(value).scaleb(-12))
