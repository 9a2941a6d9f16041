"""Credits from usage and prices: exact decimals, cached-input fallback, images, the workspace
multiplier, one rounding to the pico-credit, and the text the header and records carry."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ext_proc.metering import ZERO, Prices, credits, format_credits
from ext_proc.translators.base import Usage

ONE = Decimal(1)
GPT_4O = Prices.parse("2.50", "1.25", "10", "")


def test_prices_parse_exact_decimals_and_leave_empty_ones_unpriced():
    prices = Prices.parse("0.15", "", "0.6", "0.04")
    assert prices == Prices(Decimal("0.15"), None, Decimal("0.6"), Decimal("0.04"))
    assert Prices.parse("0", "", "", "").input_per_mtok == ZERO  # priced at zero, not unpriced
    with pytest.raises(ArithmeticError):
        Prices.parse("two dollars", "", "", "")


def test_tokens_are_charged_per_million_at_their_price():
    # 1,000 input at $2.50/M + 500 output at $10/M = 0.0025 + 0.005
    assert credits(Usage(input_tokens=1000, output_tokens=500), GPT_4O, ONE) == Decimal("0.0075")


def test_the_arithmetic_is_exact_where_floats_drift():
    prices = Prices.parse("0.1", "", "0.2", "")
    amount = credits(Usage(input_tokens=1, output_tokens=1), prices, ONE)
    assert (
        amount == Decimal("0.0000003") and format_credits(amount) == "0.0000003"
    )  # floats: 3.0000000000000004e-07


def test_cached_input_is_charged_at_the_cached_price_and_the_rest_at_the_input_price():
    usage = Usage(input_tokens=1_000_000, cached_input_tokens=400_000, output_tokens=0)
    # 600k at 2.50 + 400k at 1.25
    assert credits(usage, GPT_4O, ONE) == Decimal("1.5") + Decimal("0.5")


def test_unpriced_cached_input_falls_back_to_the_input_price_but_a_zero_price_is_free():
    usage = Usage(input_tokens=1_000_000, cached_input_tokens=400_000)
    assert credits(usage, Prices.parse("2.50", "", "", ""), ONE) == Decimal("2.5")
    assert credits(usage, Prices.parse("2.50", "0", "", ""), ONE) == Decimal("1.5")


def test_more_cached_tokens_than_input_tokens_never_charge_more_than_the_input():
    usage = Usage(input_tokens=100, cached_input_tokens=250)
    assert credits(usage, Prices.parse("1", "10", "", ""), ONE) == Decimal("0.001")  # 100 at the cached price


def test_unpriced_and_zero_priced_usage_costs_nothing():
    usage = Usage(input_tokens=12_345, cached_input_tokens=10, output_tokens=678, images=3)
    assert credits(usage, Prices(), ONE) == ZERO
    assert credits(usage, Prices.parse("0", "0", "0", "0"), ONE) == ZERO
    assert credits(Usage(), GPT_4O, ONE) == ZERO


def test_images_are_charged_per_image_only_where_priced():
    dall_e = Prices.parse("", "", "", "0.04")
    assert credits(Usage(images=3), dall_e, ONE) == Decimal("0.12")
    assert credits(Usage(images=3), GPT_4O, ONE) == ZERO  # no per-image price
    both = Prices.parse("5", "", "", "0.011")
    assert credits(Usage(input_tokens=200, images=2), both, ONE) == Decimal("0.001") + Decimal("0.022")


@pytest.mark.parametrize(
    ("multiplier", "expected"),
    [("1", "0.0075"), ("1.2", "0.009"), ("0.5", "0.00375"), ("0", "0"), ("3", "0.0225")],
)
def test_the_workspace_multiplier_scales_the_whole_charge(multiplier, expected):
    usage = Usage(input_tokens=1000, output_tokens=500)
    assert credits(usage, GPT_4O, Decimal(multiplier)) == Decimal(expected)


def test_the_charge_is_rounded_half_up_to_the_pico_credit():
    per_token = Prices.parse("0.0000005", "", "", "")  # 5e-13 credits per token
    assert credits(Usage(input_tokens=1), per_token, ONE) == Decimal("1E-12")  # half rounds up
    below = Prices.parse("0.0000004", "", "", "")
    assert credits(Usage(input_tokens=1), below, ONE) == ZERO
    assert credits(Usage(input_tokens=3), per_token, ONE) == Decimal("2E-12")  # 1.5e-12 -> 2e-12
    assert credits(Usage(input_tokens=1), GPT_4O, ONE).as_tuple().exponent == -12


def test_the_multiplier_applies_before_the_one_rounding():
    """3e-13 x 2 = 6e-13 rounds to one pico-credit; rounding first would have charged nothing."""
    prices = Prices.parse("0.0000003", "", "", "")
    assert credits(Usage(input_tokens=1), prices, Decimal(2)) == Decimal("1E-12")


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("0.000375000000"), "0.000375"),
        (Decimal("0E-12"), "0"),
        (ZERO, "0"),
        (Decimal("12.000000000000"), "12"),
        (Decimal("1000.000000000000"), "1000"),  # normalize() alone would write 1E+3
        (Decimal("1E-12"), "0.000000000001"),  # never exponent notation
        (Decimal("2.500000000000"), "2.5"),
    ],
)
def test_format_credits_writes_plain_decimals_without_trailing_zeros(amount, text):
    assert format_credits(amount) == text
    assert Decimal(text) == amount  # the text is the exact amount


def test_a_computed_charge_formats_to_the_same_digits_the_record_keeps():
    amount = credits(
        Usage(input_tokens=150, cached_input_tokens=50, output_tokens=25), GPT_4O, Decimal("1.1")
    )
    # (100 x 2.50 + 50 x 1.25 + 25 x 10) / 1e6 x 1.1 = 0.00061875
    assert format_credits(amount) == "0.00061875"


def test_speech_is_charged_per_million_characters_and_audio_per_second_to_the_millisecond():
    prices = Prices.parse("", "", "", "", "0.0001", "15")
    assert prices.per_audio_second == Decimal("0.0001") and prices.per_mchar == Decimal(15)
    assert credits(Usage(characters=44), prices, ONE) == ZERO  # only the endpoint's meters count
    from ext_proc.metering import audio_seconds_cost, characters_cost

    speech = (characters_cost,)
    heard = (audio_seconds_cost,)
    assert credits(Usage(characters=44), prices, ONE, speech) == Decimal("0.00066")  # 44 * 15 / 10^6
    assert credits(Usage(audio_ms=1250), prices, Decimal(2), heard) == Decimal("0.00025")  # 1.25 s * 2
    assert credits(Usage(audio_ms=1250, characters=9), Prices(), ONE, speech + heard) == ZERO  # unpriced
