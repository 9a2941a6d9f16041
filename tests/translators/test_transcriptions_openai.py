"""OpenAI transcriptions and translations ⇄ the OpenAI wire format: the client's form written again
as it passes with the provider's model (a valid CreateTranscriptionRequest), the answer passed
through in the format asked, the provider's duration read for the charge. Speech too: its JSON
passed through, its audio never read."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ext_proc.errors import GatewayError
from ext_proc.form_stream import FormReader, boundary_of
from ext_proc.translators.audio_speech_openai import AudioSpeechOpenAI
from ext_proc.translators.base import FormUpstream, ResponseContext, Target, Usage
from ext_proc.translators.transcriptions_openai import TranscriptionsOpenAI, TranslationsOpenAI
from simulators import forms
from tests import audio_samples
from tests.conformance import _spec, assert_openai

TARGET = Target("openai", "/v1", "sk-p", "whisper-large-v3")
WAV = audio_samples.wav(0.5)


def ctx(**request: Any) -> ResponseContext:
    return ResponseContext("whisper", "whisper-large-v3", 1_760_000_000, request=request)


def written(upstream: FormUpstream, content_type: str, body: bytes, piece: int = 977) -> bytes:
    reader = FormReader(boundary_of(content_type), upstream.writer)
    out = []
    for i in range(0, len(body), piece):
        reader.feed(body[i : i + piece])
        out.append(upstream.writer.take())
    reader.close()
    return b"".join(out)


@pytest.mark.parametrize(
    ("translator", "schema", "path"),
    [
        (TranscriptionsOpenAI(), "CreateTranscriptionRequest", "/v1/audio/transcriptions"),
        (TranslationsOpenAI(), "CreateTranslationRequest", "/v1/audio/translations"),
    ],
)
def test_the_form_goes_to_the_provider_with_its_model(translator: Any, schema: str, path: str) -> None:
    fields: dict[str, Any] = {
        "model": "whisper",
        "prompt": "Infery.",
        "response_format": "srt",
        "temperature": "0.2",
    }
    if schema == "CreateTranscriptionRequest":
        fields |= {"language": "fr", "timestamp_granularities[]": ["word", "segment"], "stream": "false"}
    content_type, body = audio_samples.form(fields, WAV)
    upstream = translator.form_request(TARGET, boundary_of(content_type))
    assert upstream.path == path
    assert upstream.headers == {"authorization": "Bearer sk-p", "content-type": content_type}
    out = written(upstream, content_type, body)
    parsed = forms.parse(content_type, out)
    assert parsed.files["file"].data == WAV and parsed.files["file"].filename == "speech.wav"
    as_json = forms.as_json(parsed, _spec().properties(schema))
    assert not _spec().request_problems(schema, as_json), _spec().request_problems(schema, as_json)
    assert as_json["model"] == "whisper-large-v3"
    assert {k: v for k, v in parsed.fields.items() if k != "model"} == {
        k.removesuffix("[]"): v for k, v in fields.items() if k != "model"
    }


def test_xai_has_no_audio_api() -> None:
    with pytest.raises(GatewayError) as err:
        TranscriptionsOpenAI().form_request(Target("xai", "/v1", "k", "grok"), b"b")
    assert (err.value.status, err.value.code, err.value.param) == (400, "unsupported_endpoint", "model")
    assert "/v1/audio/transcriptions" in err.value.message
    with pytest.raises(GatewayError, match="/v1/audio/speech"):
        AudioSpeechOpenAI().request(
            {"model": "m", "input": "x", "voice": "alloy"}, Target("xai", "/v1", "k", "g")
        )


def test_a_model_name_that_would_break_the_form_is_never_sent() -> None:
    with pytest.raises(GatewayError):
        TranscriptionsOpenAI().form_request(Target("openai", "/v1", "k", "bad\r\nname"), b"b")


@pytest.mark.parametrize(
    ("answer", "fmt", "usage"),
    [
        ({"text": "hi", "usage": {"type": "duration", "seconds": 3}}, "json", Usage(audio_ms=3000)),
        (
            {"task": "transcribe", "language": "english", "duration": 2.345, "text": "hi", "segments": []},
            "verbose_json",
            Usage(audio_ms=2345),
        ),
        (
            {"text": "hi", "usage": {"type": "tokens", "input_tokens": 14, "output_tokens": 3,
                                     "total_tokens": 17,
                                     "input_token_details": {"text_tokens": 4, "audio_tokens": 10}}},
            "json",
            Usage(input_tokens=14, output_tokens=3),
        ),
        ({"text": "hi"}, "json", None),
        ({"text": "hi", "usage": {"type": "duration", "seconds": -1}}, "json", "out of range"),
        ({"text": "hi", "usage": {"type": "duration", "seconds": "3"}}, "json", "is not a number"),
        ({"text": "hi", "duration": 1e12}, "verbose_json", "out of range"),
    ],
)  # fmt: skip
def test_the_providers_duration_is_read(answer: dict[str, Any], fmt: str, usage: Any) -> None:
    res = TranscriptionsOpenAI().response(200, orjson.dumps(answer), ctx(response_format=fmt))
    assert res.status == 200 and res.body == orjson.dumps(answer)
    if isinstance(usage, str):
        assert res.usage is not None and usage in res.usage.rejected and not res.usage.audio_ms
    else:
        assert res.usage == usage


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
def test_text_answers_pass_as_they_are(fmt: str) -> None:
    body = b"1\n00:00:00,000 --> 00:00:01,000\nhello\n\n"
    res = TranscriptionsOpenAI().response(200, body, ctx(response_format=fmt))
    assert (res.status, res.body, res.usage, res.content_type) == (200, body, None, None)


def test_an_answer_that_is_not_json_when_json_was_asked_is_the_providers_failure() -> None:
    res = TranscriptionsOpenAI().response(200, b"<html>", ctx())
    assert (res.status, res.error_code) == (502, "upstream_error")


def test_provider_errors_keep_openais_codes() -> None:
    error = {"error": {"message": "Invalid file format.", "type": "invalid_request_error", "param": "file",
                       "code": "invalid_value"}}  # fmt: skip
    res = TranscriptionsOpenAI().response(400, orjson.dumps(error), ctx())
    out = orjson.loads(res.body)
    assert_openai(out, "ErrorResponse")
    assert (res.status, out["error"]["code"], out["error"]["param"]) == (400, "invalid_value", "file")
    assert TranscriptionsOpenAI().response(429, b"{}", ctx()).error_code == "rate_limit_exceeded"


def test_speech_passes_its_json_with_the_providers_model() -> None:
    body = {"model": "tts", "input": "Hello", "voice": "alloy", "response_format": "wav", "speed": 1.5}
    upstream = AudioSpeechOpenAI().request(dict(body), Target("openai", "/v1", "sk-p", "gpt-4o-mini-tts"))
    assert upstream.path == "/v1/audio/speech"
    sent = orjson.loads(upstream.body)
    assert not _spec().request_problems("CreateSpeechRequest", sent)
    assert sent == {**body, "model": "gpt-4o-mini-tts"}


def test_speech_audio_is_never_read_but_its_errors_are() -> None:
    audio = audio_samples.wav(0.1)
    res = AudioSpeechOpenAI().response(200, audio, ctx())
    assert (res.body, res.usage) == (audio, None)
    error = AudioSpeechOpenAI().response(400, b'{"error": {"message": "bad voice", "param": "voice"}}', ctx())
    assert (error.status, orjson.loads(error.body)["error"]["param"]) == (400, "voice")


def test_a_streamed_transcription_passes_with_its_usage() -> None:
    usage = {"type": "tokens", "input_tokens": 20, "output_tokens": 3, "total_tokens": 23}
    done = {"type": "transcript.text.done", "text": "Hi there.", "usage": usage}
    body = (
        b'data: {"type":"transcript.text.delta","delta":"Hi"}\n\n'
        b'data: {"type":"transcript.text.delta","delta":" there."}\n\n'
        b"data: " + orjson.dumps(done) + b"\n\n"
    )
    res = TranscriptionsOpenAI().response(200, body, ctx(stream="true"))
    assert (res.body, res.content_type) == (body, "text/event-stream")
    assert res.usage == Usage(input_tokens=20, output_tokens=3)  # no duration: the gateway's measure counts
