"""The transcription and translation endpoints: a form read as it passes, OpenAI's checks of its
values, streamed only for transcriptions, and which duration is charged."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from ext_proc.endpoints.audio_transcriptions import ENDPOINT as TRANSCRIPTIONS
from ext_proc.endpoints.audio_translations import ENDPOINT as TRANSLATIONS
from ext_proc.endpoints.base import NOT_STREAMED, RequestBody
from ext_proc.errors import GatewayError
from ext_proc.metering import Prices, credits
from ext_proc.translators.base import Usage


def test_declares_streamed_forms() -> None:
    assert TRANSCRIPTIONS.request_body is RequestBody.STREAMED and TRANSCRIPTIONS.streams
    assert TRANSLATIONS.request_body is RequestBody.STREAMED and not TRANSLATIONS.streams
    assert TRANSCRIPTIONS.streaming({"stream": "True"}) == (True, False)
    assert TRANSCRIPTIONS.streaming({"stream": "false"}) == NOT_STREAMED
    assert TRANSCRIPTIONS.reservation({"model": "w"}) == 1


@pytest.mark.parametrize(
    ("fields", "code", "param"),
    [
        ({"response_format": "xml"}, "invalid_value", "response_format"),
        ({"temperature": "hot"}, "invalid_type", "temperature"),
        ({"temperature": "1.5"}, "invalid_value", "temperature"),
        ({"temperature": "nan"}, "invalid_value", "temperature"),
        ({"stream": "maybe"}, "invalid_type", "stream"),
        (
            {"timestamp_granularities": ["line"], "response_format": "verbose_json"},
            "invalid_value",
            "timestamp_granularities",
        ),
        ({"timestamp_granularities": ["word"]}, "invalid_value", "timestamp_granularities"),
    ],
)
def test_openais_refusals(fields: dict[str, Any], code: str, param: str) -> None:
    with pytest.raises(GatewayError) as err:
        TRANSCRIPTIONS.check({"model": "w", **fields})
    assert (err.value.status, err.value.code, err.value.param) == (400, code, param)


def test_translations_take_no_stream() -> None:
    with pytest.raises(GatewayError) as err:
        TRANSLATIONS.check({"model": "w", "stream": "true"})
    assert (err.value.code, err.value.param) == ("unknown_parameter", "stream")
    TRANSLATIONS.check({"model": "w", "response_format": "srt", "temperature": "0"})


def test_the_providers_duration_wins_then_the_gateways_measure_then_an_estimate() -> None:
    told = Usage(audio_ms=3000)
    assert TRANSCRIPTIONS.upload_usage(told, 1500, 10_000) is told
    tokens = Usage(input_tokens=14, output_tokens=3)
    assert TRANSCRIPTIONS.upload_usage(tokens, 1500, 10_000) == Usage(
        input_tokens=14, output_tokens=3, audio_ms=1500
    )
    assert TRANSCRIPTIONS.upload_usage(None, 1500, 10_000) == Usage(audio_ms=1500)
    guessed = TRANSCRIPTIONS.upload_usage(None, None, 10_001)
    assert guessed == Usage(estimated=True, audio_ms=5001)  # 16 kbit/s: 2000 bytes a second
    lie = "provider usage seconds=-1 is out of range"
    assert TRANSCRIPTIONS.upload_usage(Usage(rejected=lie), 800, 10) == Usage(rejected=lie, audio_ms=800)


def test_priced_per_second_to_the_millisecond() -> None:
    prices = Prices(per_audio_second=Decimal("0.0001"), output_per_mtok=Decimal(10))
    assert credits(
        Usage(audio_ms=1500, output_tokens=100), prices, Decimal(1), TRANSCRIPTIONS.meters
    ) == Decimal("0.00015")
