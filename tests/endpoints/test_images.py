"""The image generation endpoint: never streamed, input estimated from the prompt, priced per image."""

from __future__ import annotations

from decimal import Decimal

from ext_proc.endpoints.base import NOT_STREAMED, RequestBody
from ext_proc.endpoints.images import ENDPOINT as IMAGES
from ext_proc.metering import Prices, credits
from ext_proc.translators.base import Usage


def test_declares_a_json_post_never_streamed() -> None:
    assert (IMAGES.name, IMAGES.paths, IMAGES.methods) == ("images", ("/v1/images/generations",), {"POST"})
    assert IMAGES.request_body is RequestBody.JSON and not IMAGES.streams
    assert IMAGES.streaming({"prompt": "x", "stream": True}) == NOT_STREAMED


def test_reservation_is_the_prompt() -> None:
    assert IMAGES.reservation({"prompt": "a cat"}) == 2  # moved from test_limits.py
    assert IMAGES.reservation({}) == 1
    assert IMAGES.reservation({"prompt": ["a", "cat"]}) == 1
    assert IMAGES.input_tokens({"prompt": "a" * 41}) == 11


def test_credits_are_per_image_plus_reported_tokens() -> None:
    per_image = Prices(per_image=Decimal("0.04"))
    assert credits(Usage(images=2), per_image, Decimal(1), IMAGES.meters) == Decimal("0.08")
    tokens_too = Prices(Decimal("5"), None, Decimal("40"), Decimal("0.01"))
    usage = Usage(input_tokens=100, output_tokens=4000, images=1)
    assert credits(usage, tokens_too, Decimal(2), IMAGES.meters) == 2 * (
        (100 * 5 + 4000 * 40) / Decimal(1_000_000) + Decimal("0.01")
    )
    assert credits(Usage(images=2), Prices(), Decimal(1), IMAGES.meters) == 0  # an unpriced model is free
