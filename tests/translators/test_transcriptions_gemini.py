"""OpenAI transcriptions and translations ⇄ Gemini's generateContent: the form written as a valid
GenerateContentRequest (checked with Google's own types) carrying the file's exact bytes, and
Gemini's answer written in every OpenAI format (checked with OpenAI's spec)."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ext_proc.errors import GatewayError
from ext_proc.form_stream import FormReader, boundary_of
from ext_proc.translators.base import ResponseContext, Target, Usage
from ext_proc.translators.transcriptions_gemini import (
    TranscriptionsGemini,
    TranslationsGemini,
    audio_mime,
)
from tests import audio_samples
from tests.conformance import assert_openai
from tests.translators._support import assert_gemini_request

TARGET = Target("google", "", "AIza-k", "gemini-2.5-flash")
WAV = audio_samples.wav(1.2)


def write(
    translator: Any, fields: Any, file: bytes = WAV, piece: int | None = 1001, first: bool = False
) -> bytes:
    content_type, body = audio_samples.form(fields, file, file_first=first)
    upstream = translator.form_request(TARGET, boundary_of(content_type))
    assert upstream.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert upstream.headers == {"x-goog-api-key": "AIza-k", "content-type": "application/json"}
    reader = FormReader(boundary_of(content_type), upstream.writer)
    out = []
    step = piece or len(body)
    for i in range(0, len(body), step):
        reader.feed(body[i : i + step])
        out.append(upstream.writer.take())
    reader.close()
    return b"".join(out)


def test_the_audio_goes_inline_with_its_instructions_after_it() -> None:
    out = write(
        TranscriptionsGemini(),
        {"model": "g", "language": "fr", "prompt": "Names: Zoë.", "temperature": "0.3"},
    )
    request = orjson.loads(out)
    assert_gemini_request(request)
    audio, ask = request["contents"][0]["parts"]
    assert audio["inlineData"]["mimeType"] == "audio/wav"
    assert base64.b64decode(audio["inlineData"]["data"]) == WAV
    assert "Transcribe" in ask["text"] and "'fr'" in ask["text"] and "Names: Zoë." in ask["text"]
    assert request["generationConfig"] == {"temperature": 0.3}


@settings(max_examples=50, deadline=None)
@given(piece=st.integers(min_value=1, max_value=5000), size=st.integers(min_value=0, max_value=40))
def test_the_base64_is_exact_whatever_the_chunks(piece: int, size: int) -> None:
    file = audio_samples.wav(1.2)[: 44 + size] if size else audio_samples.wav(0.01)
    request = orjson.loads(write(TranscriptionsGemini(), {"model": "g"}, file, piece=piece))
    assert base64.b64decode(request["contents"][0]["parts"][0]["inlineData"]["data"]) == file


def test_fields_after_the_file_still_count() -> None:
    request = orjson.loads(write(TranslationsGemini(), {"model": "g", "response_format": "vtt"}, first=True))
    assert_gemini_request(request)
    ask = request["contents"][0]["parts"][1]["text"]
    assert ask.startswith("Translate the speech in this audio into English")
    assert request["generationConfig"]["responseMimeType"] == "application/json"
    assert "segments" in request["generationConfig"]["responseJsonSchema"]["properties"]


@pytest.mark.parametrize(
    ("head", "content_type", "filename", "mime"),
    [
        (audio_samples.wav(0.01)[:12], "application/octet-stream", "x.bin", "audio/wav"),
        (audio_samples.mp3_cbr(2)[:12], "", "", "audio/mp3"),
        (audio_samples.id3v2(10)[:12], "", "", "audio/mp3"),
        (audio_samples.flac_header(10)[:12], "", "", "audio/flac"),
        (audio_samples.ogg_opus(0.1)[:12], "", "", "audio/ogg"),
        (audio_samples.mp4(1.0)[:12], "", "", "audio/mp4"),
        (b"FORM\x00\x00\x00\x00AIFF", "", "", "audio/aiff"),
        (b"\xff\xf1\x50\x80" + bytes(8), "", "", "audio/aac"),
        (bytes(12), "audio/x-wav", "", "audio/wav"),
        (bytes(12), "audio/mpeg", "", "audio/mp3"),
        (bytes(12), "", "talk.FLAC", "audio/flac"),
        (bytes(12), "", "talk", "application/octet-stream"),
    ],
)
def test_the_files_type_is_read_from_its_bytes_first(
    head: bytes, content_type: str, filename: str, mime: str
) -> None:
    assert audio_mime(head, content_type, filename) == mime


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {"model": "g", "response_format": "verbose_json", "timestamp_granularities[]": "word"},
            "timestamp_granularities",
        ),
        ({"model": "g", "include[]": "logprobs"}, "include"),
        ({"model": "g", "response_format": "diarized_json"}, "response_format"),
    ],
)
def test_what_gemini_cannot_honour_is_refused(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as err:
        write(TranscriptionsGemini(), fields)
    assert (err.value.status, err.value.code, err.value.param) == (400, "unsupported_parameter", param)


# ------------------------------------------------------------------ answers


def answer(text: str, audio_tokens: int | None = 38) -> bytes:
    details = [{"modality": "TEXT", "tokenCount": 20}]
    if audio_tokens is not None:
        details.append({"modality": "AUDIO", "tokenCount": audio_tokens})
    return orjson.dumps(
        {
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
            "usageMetadata": {
                "promptTokenCount": 20 + (audio_tokens or 0),
                "candidatesTokenCount": 9,
                "totalTokenCount": 29 + (audio_tokens or 0),
                "promptTokensDetails": details,
            },
        }
    )


SEGMENTS = orjson.dumps(
    {
        "language": "French",
        "text": "Bonjour. Ça va?",
        "segments": [
            {"start": 0, "end": 0.5, "text": "Bonjour."},
            {"start": 0.5, "end": 1.2, "text": " Ça va?"},
        ],
    }
).decode()


def ctx(audio_ms: int = 0, **request: Any) -> ResponseContext:
    return ResponseContext("gem", "gemini-2.5-flash", 1_760_000_000, request=request, audio_ms=audio_ms)


def test_json_and_text() -> None:
    res = TranscriptionsGemini().response(200, answer(" Bonjour. \n"), ctx())
    out = orjson.loads(res.body)
    assert_openai(out, "CreateTranscriptionResponseJson")
    assert out == {"text": "Bonjour.", "usage": {"type": "duration", "seconds": 2}}
    assert res.usage == Usage(input_tokens=58, output_tokens=9, audio_ms=1188)  # 38 tokens / 32 per s
    text = TranscriptionsGemini().response(200, answer("Bonjour."), ctx(response_format="text"))
    assert (text.body, text.content_type) == (b"Bonjour.\n", "text/plain; charset=utf-8")


def test_verbose_json() -> None:
    res = TranscriptionsGemini().response(200, answer(SEGMENTS), ctx(response_format="verbose_json"))
    out = orjson.loads(res.body)
    assert_openai(out, "CreateTranscriptionResponseVerboseJson")
    assert (out["task"], out["language"], out["duration"], out["text"]) == (
        "transcribe",
        "french",
        1.188,
        "Bonjour. Ça va?",
    )
    assert [(s["id"], s["start"], s["end"], s["text"]) for s in out["segments"]] == [
        (0, 0.0, 0.5, "Bonjour."),
        (1, 0.5, 1.2, "Ça va?"),
    ]
    translated = orjson.loads(
        TranslationsGemini().response(200, answer(SEGMENTS), ctx(response_format="verbose_json")).body
    )
    assert_openai(translated, "CreateTranslationResponseVerboseJson")
    assert (translated["task"], translated["language"]) == ("translate", "english")


def test_without_audio_tokens_the_gateways_measure_gives_the_duration() -> None:
    res = TranscriptionsGemini().response(
        200, answer(SEGMENTS, None), ctx(1500, response_format="verbose_json")
    )
    assert orjson.loads(res.body)["duration"] == 1.5 and res.usage is not None and res.usage.audio_ms == 0


def test_subtitles() -> None:
    srt = TranscriptionsGemini().response(200, answer(SEGMENTS), ctx(response_format="srt"))
    assert (
        srt.body.decode()
        == "1\n00:00:00,000 --> 00:00:00,500\nBonjour.\n\n2\n00:00:00,500 --> 00:00:01,200\nÇa va?\n\n"
    )
    vtt = TranscriptionsGemini().response(200, answer(SEGMENTS), ctx(response_format="vtt"))
    assert (
        vtt.body.decode()
        == "WEBVTT\n\n00:00:00.000 --> 00:00:00.500\nBonjour.\n\n00:00:00.500 --> 00:00:01.200\nÇa va?\n\n"
    )
    assert vtt.content_type == srt.content_type == "text/plain; charset=utf-8"


def test_a_stream_is_the_whole_answer_as_openais_events() -> None:
    res = TranscriptionsGemini().response(200, answer("Bonjour tout le monde."), ctx(stream="true"))
    assert res.content_type == "text/event-stream"
    assert res.body.endswith(b"\n\n")
    events = [orjson.loads(block[6:]) for block in res.body.split(b"\n\n")[:-1]]
    for event in events:
        assert_openai(event, "CreateTranscriptionResponseStreamEvent")
    assert "".join(e["delta"] for e in events[:-1]) == "Bonjour tout le monde."
    assert events[-1]["type"] == "transcript.text.done" and events[-1]["usage"]["input_tokens"] == 58


def test_a_segmented_answer_that_is_not_the_json_asked_for_is_the_providers_failure() -> None:
    res = TranscriptionsGemini().response(200, answer("not json"), ctx(response_format="srt"))
    assert (res.status, res.error_code) == (502, "upstream_error")


def test_a_blocked_answer_and_errors() -> None:
    blocked = orjson.dumps({"promptFeedback": {"blockReason": "SAFETY"}})
    res = TranscriptionsGemini().response(200, blocked, ctx())
    assert (res.status, res.error_code) == (400, "content_filter")
    error = orjson.dumps({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}})
    assert TranscriptionsGemini().response(429, error, ctx()).error_code == "rate_limit_exceeded"
    bad = orjson.dumps(
        {"error": {"code": 400, "message": "Unsupported MIME type: audio/webm", "status": "INVALID_ARGUMENT"}}
    )
    res = TranscriptionsGemini().response(400, bad, ctx())
    assert (res.status, orjson.loads(res.body)["error"]["message"]) == (
        400,
        "Unsupported MIME type: audio/webm",
    )


def test_absurd_audio_tokens_are_refused_not_charged() -> None:
    res = TranscriptionsGemini().response(200, answer("hi", 10**12), ctx())
    assert res.usage is not None and res.usage.rejected and not res.usage.audio_ms
