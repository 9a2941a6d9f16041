"""The speech endpoint: OpenAI's checks of CreateSpeechRequest, the answer passed untouched, the
charge known from the request's characters."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from ext_proc.endpoints.audio_speech import ENDPOINT as SPEECH
from ext_proc.endpoints.base import NOT_STREAMED, RequestBody
from ext_proc.errors import GatewayError
from ext_proc.metering import Prices, credits
from ext_proc.translators.base import Usage

OK = {"model": "tts", "input": "Hello, world!", "voice": "alloy"}


def test_declares_a_json_post_whose_answer_passes_untouched() -> None:
    assert (SPEECH.name, SPEECH.paths, SPEECH.request_body) == (
        "audio_speech",
        ("/v1/audio/speech",),
        RequestBody.JSON,
    )
    assert SPEECH.passes_answer and not SPEECH.streams
    assert SPEECH.streaming({**OK, "stream_format": "sse"}) == NOT_STREAMED  # the bytes pass as they come


def test_the_charge_is_the_characters_of_input() -> None:
    usage = SPEECH.request_usage({**OK, "input": "héllo 👋"})
    assert usage == Usage(characters=7)  # code points, not bytes
    prices = Prices(per_mchar=Decimal(15), input_per_mtok=Decimal(99))
    assert credits(Usage(characters=1_000), prices, Decimal(1), SPEECH.meters) == Decimal("0.015")
    assert SPEECH.reservation(OK) == 4


@pytest.mark.parametrize(
    ("change", "code", "param"),
    [
        ({"input": None}, "missing_required_parameter", "input"),
        ({"input": 12}, "invalid_type", "input"),
        ({"input": "x" * 4097}, "string_above_max_length", "input"),
        ({"voice": None}, "missing_required_parameter", "voice"),
        ({"voice": {"name": "x"}}, "invalid_type", "voice"),
        ({"response_format": "ogg"}, "invalid_value", "response_format"),
        ({"stream_format": "chunks"}, "invalid_value", "stream_format"),
        ({"speed": 5}, "invalid_value", "speed"),
        ({"speed": "fast"}, "invalid_type", "speed"),
        ({"instructions": ["x"]}, "invalid_type", "instructions"),
    ],
)
def test_openais_refusals(change: dict[str, Any], code: str, param: str) -> None:
    body = {k: v for k, v in {**OK, **change}.items() if v is not None}
    with pytest.raises(GatewayError) as err:
        SPEECH.check(body)
    assert (err.value.status, err.value.code, err.value.param) == (400, code, param)


def test_what_openai_accepts() -> None:
    SPEECH.check(
        {**OK, "voice": {"id": "voice_123"}, "speed": 0.25, "response_format": "pcm", "instructions": "Calm."}
    )
    SPEECH.check({**OK, "input": "x" * 4096, "stream_format": "sse", "speed": 4})
