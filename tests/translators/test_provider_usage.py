"""Every provider format's usage, read in one place: counts a provider cannot mean are refused."""

from __future__ import annotations

from typing import Any

import pytest

from ext_proc.translators import usage
from ext_proc.translators.base import Usage

# One valid usage per format, and the name of its prompt-token count.
FORMATS = {
    "openai": (
        lambda raw: usage.openai({"usage": raw}),
        {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 4}},
        "prompt_tokens",
        Usage(10, 4, 5, 0),
    ),
    "anthropic": (
        usage.anthropic,
        {"input_tokens": 6, "cache_read_input_tokens": 4, "output_tokens": 5},
        "input_tokens",
        Usage(10, 4, 5, 0),
    ),
    "gemini": (
        usage.gemini,
        {
            "promptTokenCount": 10,
            "cachedContentTokenCount": 4,
            "candidatesTokenCount": 3,
            "thoughtsTokenCount": 2,
        },
        "promptTokenCount",
        Usage(10, 4, 5, 2),
    ),
}


@pytest.mark.parametrize("kind", FORMATS)
def test_valid_usage_is_read_as_given(kind: str) -> None:
    read, raw, _, expected = FORMATS[kind]
    assert read(raw) == expected


@pytest.mark.parametrize("kind", FORMATS)
@pytest.mark.parametrize(
    ("value", "why"),
    [
        (-1e12, "is negative"),
        (-1, "is negative"),
        ("abc", "is not a number"),
        ("12", "is not a number"),
        (True, "is not a number"),
        (2.5, "is not an integer"),
        (10**12, "is over 100000000"),
        ([1], "is not a number"),
    ],
)
def test_a_count_that_cannot_be_true_rejects_the_whole_usage(kind: str, value: Any, why: str) -> None:
    read, raw, name, _ = FORMATS[kind]
    got = read({**raw, name: value})
    assert got is not None and got.rejected.startswith(f"provider usage {name}=") and why in got.rejected
    assert (got.input_tokens, got.cached_input_tokens, got.output_tokens) == (0, 0, 0)  # nothing believed


@pytest.mark.parametrize("kind", FORMATS)
def test_an_integral_float_is_an_integer(kind: str) -> None:
    read, raw, name, expected = FORMATS[kind]
    assert read({**raw, name: float(raw[name])}) == expected


def test_no_usage_at_all_is_none() -> None:
    assert usage.openai({"choices": []}) is None
    assert usage.openai({"usage": None}) is None
    assert usage.anthropic(None) is None and usage.anthropic({}) is None
    assert usage.gemini(None) is None and usage.gemini("x") is None


def test_an_image_answer_without_usage_is_priced_per_image() -> None:
    # The images pair counts them (test_images_openai.py); the reader keeps the count.
    assert usage.openai({"created": 1, "data": [{"url": "u"}, {"url": "v"}]}, images=2) == Usage(images=2)
    assert usage.openai({"usage": {"input_tokens": -1}}, images=2) == Usage(
        images=2, rejected="provider usage input_tokens=-1 is negative"
    )


def test_a_long_bad_value_is_shortened_in_the_reason() -> None:
    got = usage.openai({"usage": {"prompt_tokens": "x" * 500}})
    assert got is not None and len(got.rejected) < 120
