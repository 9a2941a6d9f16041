"""``POST /v1/audio/speech``: OpenAI's text to speech. JSON in, audio bytes out.

The answer is the provider's audio (``audio/mpeg``, ``audio/wav``..., or an SSE stream of
audio deltas with ``stream_format: sse``) and goes to the client as the provider produces it:
Envoy never sends its body to ext_proc (:attr:`~.base.Endpoint.passes_answer`). That is
possible because the charge is known from the request alone: ``per_mchar`` * the characters
of ``input`` ÷ 10⁶, in ``x-credits-used`` with the answer's headers and in the usage record.

Its parameters are checked as OpenAI's ``CreateSpeechRequest`` declares them, before any
translation: ``input`` (a string of at most 4096 characters), ``voice`` (a name, or
``{"id": ...}``), ``instructions`` (at most 4096), ``response_format``, ``speed`` (0.25 to
4) and ``stream_format``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ext_proc.errors import GatewayError
from ext_proc.metering import characters_cost
from ext_proc.token_estimate import tokens_for_chars
from ext_proc.translators.base import Usage

from .base import Endpoint

MAX_INPUT_CHARS = 4096
RESPONSE_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
STREAM_FORMATS = ("sse", "audio")


class AudioSpeech(Endpoint):
    __slots__ = ()

    name = "audio_speech"
    paths = ("/v1/audio/speech",)
    operation = "text_to_speech"
    meters = (characters_cost,)
    passes_answer = True

    def check(self, body: dict[str, Any]) -> None:
        text = body.get("input")
        if text is None:
            raise _missing("input")
        if not isinstance(text, str):
            raise _type("input", "a string", text)
        if len(text) > MAX_INPUT_CHARS:
            raise GatewayError(
                400,
                "string_above_max_length",
                f"Invalid 'input': string too long. Expected a string with maximum length "
                f"{MAX_INPUT_CHARS}, but got a string with length {len(text)} instead.",
                "input",
            )
        voice = body.get("voice")
        if voice is None:
            raise _missing("voice")
        if not (isinstance(voice, str) or (isinstance(voice, dict) and isinstance(voice.get("id"), str))):
            raise _type("voice", 'a string or an object with an "id"', voice)
        instructions = body.get("instructions")
        if instructions is not None and (not isinstance(instructions, str) or len(instructions) > 4096):
            raise _type("instructions", "a string of at most 4096 characters", instructions)
        _one_of(body, "response_format", RESPONSE_FORMATS)
        _one_of(body, "stream_format", STREAM_FORMATS)
        speed = body.get("speed")
        if speed is not None:
            if isinstance(speed, bool) or not isinstance(speed, int | float):
                raise _type("speed", "a decimal", speed)
            if not 0.25 <= speed <= 4:
                raise GatewayError(
                    400,
                    "invalid_value",
                    f"Invalid 'speed': expected a value from 0.25 to 4, but got {speed} instead.",
                    "speed",
                )

    def prompt_tokens(self, body: Mapping[str, Any]) -> int:
        text = body.get("input")
        return tokens_for_chars(len(text)) if isinstance(text, str) else 0

    def request_usage(self, body: Mapping[str, Any]) -> Usage:
        """The characters spoken: ``input``'s length in Unicode code points."""
        text = body.get("input")
        return Usage(characters=len(text) if isinstance(text, str) else 0)


ENDPOINT = AudioSpeech()


def _missing(name: str) -> GatewayError:
    return GatewayError(400, "missing_required_parameter", f"Missing required parameter: '{name}'.", name)


def _type(name: str, expected: str, value: Any) -> GatewayError:
    return GatewayError(
        400,
        "invalid_type",
        f"Invalid type for '{name}': expected {expected}, got {type(value).__name__}.",
        name,
    )


def _one_of(body: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> None:
    value = body.get(name)
    if value is not None and value not in allowed:
        raise GatewayError(
            400,
            "invalid_value",
            f"Invalid '{name}': expected one of {', '.join(allowed)}, but got {value!r} instead.",
            name,
        )
