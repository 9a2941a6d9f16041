"""``POST /v1/audio/transcriptions``: OpenAI's speech to text. A multipart form in, the
transcript out in the format asked for (``json``, ``text``, ``srt``, ``vtt``, ``verbose_json``).

The form reaches ext_proc chunk by chunk (``RequestBody.STREAMED``, ext_proc/audio_upload.py):
its fields are kept, its file is measured and rewritten for the provider as it passes, never
held whole. Its "body", for the checks here and the translators, is the form's fields as
strings (``stream: "true"``, ``temperature: "0.2"``), lists for the ``name[]`` ones.

Priced per second of audio heard (``per_audio_second``), :meth:`AudioTranscriptions.upload_usage`
says which duration counts: the provider's when its answer gives one (OpenAI's
``usage.seconds`` or verbose ``duration``, Gemini's audio tokens), else the gateway's own
measure of the file (ext_proc/audio_duration.py: WAV, FLAC, MP3, Ogg, MP4/M4A), else an
estimate from the file's size at :data:`ESTIMATE_BYTES_PER_SECOND` (16 kbit/s, the low end of
speech codecs: it errs towards the longer duration), marked ``usage_estimated``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ext_proc.errors import GatewayError
from ext_proc.metering import audio_seconds_cost
from ext_proc.translators.base import Usage

from .base import NOT_STREAMED, Endpoint, RequestBody

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt", "diarized_json")
GRANULARITIES = ("word", "segment")
ESTIMATE_BYTES_PER_SECOND = 2000
_TRUE = ("true", "1")
_BOOLEANS = ("true", "false", "1", "0")
_STREAMED = (True, False)


def flag(fields: Mapping[str, Any], name: str) -> bool:
    """A boolean form field ("true"/"false", any case; "1"/"0")."""
    value = fields.get(name)
    return isinstance(value, str) and value.strip().lower() in _TRUE


class AudioTranscriptions(Endpoint):
    __slots__ = ()

    name = "audio_transcriptions"
    paths = ("/v1/audio/transcriptions",)
    request_body = RequestBody.STREAMED
    streams = True
    operation = "transcription"
    meters = (audio_seconds_cost,)

    def check(self, body: dict[str, Any]) -> None:
        """OpenAI's refusals for the form's values (their types are strings in a form)."""
        response_format = body.get("response_format")
        if response_format is not None and response_format not in RESPONSE_FORMATS:
            raise _invalid(
                "response_format", f"must be one of {', '.join(RESPONSE_FORMATS)}", response_format
            )
        temperature = body.get("temperature")
        if temperature is not None:
            try:
                value = float(temperature)
            except ValueError:
                raise GatewayError(
                    400, "invalid_type", "Invalid type for 'temperature': expected a number.", "temperature"
                ) from None
            if not 0 <= value <= 1 or math.isnan(value):
                raise _invalid("temperature", "must be from 0 to 1", temperature)
        stream = body.get("stream")
        if stream is not None:
            if not self.streams:
                raise GatewayError(
                    400,
                    "unknown_parameter",
                    f"Unrecognized request argument supplied: stream ({self.path}).",
                    "stream",
                )
            if not isinstance(stream, str) or stream.strip().lower() not in _BOOLEANS:
                raise GatewayError(
                    400, "invalid_type", "Invalid type for 'stream': expected a boolean.", "stream"
                )
        granularities = body.get("timestamp_granularities")
        if granularities is not None:
            if not isinstance(granularities, list) or any(g not in GRANULARITIES for g in granularities):
                raise _invalid("timestamp_granularities", "must be word, segment or both", granularities)
            if response_format != "verbose_json":
                raise _invalid(
                    "timestamp_granularities", "needs response_format 'verbose_json'", response_format
                )

    def streaming(self, body: Mapping[str, Any]) -> tuple[bool, bool]:
        return _STREAMED if self.streams and flag(body, "stream") else NOT_STREAMED

    def prompt_tokens(self, body: Mapping[str, Any]) -> int:
        return 0  # priced per second of audio; a token limit counts the request as 1

    def upload_usage(self, provider: Usage | None, measured_ms: int | None, file_bytes: int) -> Usage:
        """The usage to charge: the provider's seconds when it gave them, else the gateway's
        measure of the file, else the estimate from its size (``estimated``)."""
        if provider is not None and provider.audio_ms and not provider.rejected:
            return provider
        keep = provider if provider is not None and not provider.rejected else Usage()
        rejected = provider.rejected if provider is not None else ""  # kept for the usage record
        if measured_ms is not None:
            return Usage(
                keep.input_tokens,
                keep.cached_input_tokens,
                keep.output_tokens,
                rejected=rejected,
                audio_ms=measured_ms,
            )
        estimate = math.ceil(file_bytes * 1000 / ESTIMATE_BYTES_PER_SECOND)
        return Usage(
            keep.input_tokens,
            keep.cached_input_tokens,
            keep.output_tokens,
            estimated=True,
            rejected=rejected,
            audio_ms=estimate,
        )


ENDPOINT = AudioTranscriptions()


def _invalid(name: str, expected: str, value: Any) -> GatewayError:
    return GatewayError(400, "invalid_value", f"Invalid '{name}': {expected}, but got {value!r}.", name)
