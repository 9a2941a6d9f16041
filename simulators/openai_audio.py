"""Simulated OpenAI audio: ``/v1/audio/speech``, ``/v1/audio/transcriptions``, ``/v1/audio/translations``.

Requests are checked as the real API checks them: the speech JSON against
``CreateSpeechRequest``, the multipart forms (their strings typed as the schema declares,
simulators/forms.py) against ``CreateTranscriptionRequest`` / ``CreateTranslationRequest``,
unknown fields refused; plus the rules the schema cannot say (``stream_format: sse`` not for
``tts-1``; ``gpt-4o*-transcribe`` answers ``json`` or ``text`` only).

Answers as the real API gives them (simulators/audio.py makes the sound and the transcript):

* speech: the audio in the asked format, in :data:`~simulators.audio.SPEECH_CHUNKS` pieces, with
  the format's content type; ``stream_format: sse``: ``speech.audio.delta`` events (base64) and a
  ``speech.audio.done`` with token usage.
* transcriptions: ``json`` ``{"text", "usage"}`` (whisper-1: a duration usage of whole seconds,
  rounded up; ``gpt-4o*-transcribe``: a token usage), ``text``/``srt``/``vtt`` as text/plain
  with no usage, ``verbose_json`` with ``duration`` and segments (whisper-1);
  ``stream: true`` on ``gpt-4o*-transcribe``: ``transcript.text.delta`` events and a
  ``transcript.text.done`` with token usage (whisper-1 ignores ``stream``, as the real one).
* translations: like transcriptions, in English, without usage (the spec's translation
  objects have none).
"""

from __future__ import annotations

import base64
import math
from typing import TYPE_CHECKING, Any

import orjson

from simulators import audio, forms
from simulators.content import count_tokens
from simulators.openai_rules import check_request
from simulators.provider import ApiError, Call, merge_usage
from simulators.replies import JsonReply, RawReply, Reply, StreamReply

if TYPE_CHECKING:
    from simulators.openai_api import OpenAI

TEXT_PLAIN = "text/plain; charset=utf-8"
_TOKEN_MODELS = ("gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-transcribe")


def speech(provider: OpenAI, call: Call) -> Reply:
    body = provider.require_json(call)
    check_request(provider.spec, "CreateSpeechRequest", body, required=("model", "input", "voice"))
    model = str(body["model"])
    text = str(body["input"])
    if body.get("stream_format") == "sse":
        if model.startswith("tts-1"):
            raise ApiError(400, f"stream_format 'sse' is not supported for {model}.", param="stream_format")
        data, _ = audio.speech(text, "pcm")
        events = [
            b"data: "
            + orjson.dumps({"type": "speech.audio.delta", "audio": base64.b64encode(piece).decode()})
            + b"\n\n"
            for piece in audio.pieces(data)
        ]
        tokens = count_tokens(text)
        output = math.ceil(len(data) / 2 / audio.RATE * 20)
        usage = {"input_tokens": tokens, "output_tokens": output, "total_tokens": tokens + output}
        merge_usage(usage, call.usage_override, ("total_tokens", "input_tokens", "output_tokens"))
        events.append(b"data: " + orjson.dumps({"type": "speech.audio.done", "usage": usage}) + b"\n\n")
        return StreamReply(events)
    data, content_type = audio.speech(text, str(body.get("response_format") or "mp3"))
    return RawReply(audio.pieces(data), content_type)


def transcription(provider: OpenAI, call: Call, *, translate: bool = False) -> Reply:
    form = provider.require_form(call)
    schema = "CreateTranslationRequest" if translate else "CreateTranscriptionRequest"
    body = forms.as_json(form, provider.spec.properties(schema) if provider.spec is not None else {})
    check_request(provider.spec, schema, body, required=("file", "model"))
    upload = form.files.get("file")
    if upload is None or not audio.is_readable(upload.data):
        raise ApiError(400, "Audio file might be corrupted or unsupported", param="file")
    model = str(body["model"])
    token_model = model.startswith(_TOKEN_MODELS)
    fmt = str(body.get("response_format") or "json")
    if token_model and fmt not in ("json", "text"):
        raise ApiError(
            400,
            f"response_format '{fmt}' is not compatible with model '{model}'. Use 'json' or 'text' instead.",
            code="unsupported_value",
            param="response_format",
        )
    seconds = audio.heard_seconds(upload.data)
    text = audio.transcript(seconds, translate, "" if translate else str(body.get("language") or ""))
    prompt_tokens = count_tokens(str(body.get("prompt") or ""))
    audio_tokens = math.ceil(seconds * 10)
    tokens = {
        "type": "tokens",
        "input_tokens": prompt_tokens + audio_tokens,
        "input_token_details": {"text_tokens": prompt_tokens, "audio_tokens": audio_tokens},
        "output_tokens": count_tokens(text),
        "total_tokens": prompt_tokens + audio_tokens + count_tokens(text),
    }
    usage: dict[str, Any] = tokens if token_model else {"type": "duration", "seconds": math.ceil(seconds)}
    merge_usage(usage, call.usage_override)
    if body.get("stream") is True and token_model and not translate:
        words = text.split(" ")
        events = [
            b"data: "
            + orjson.dumps({"type": "transcript.text.delta", "delta": w if i == 0 else " " + w})
            + b"\n\n"
            for i, w in enumerate(words)
        ]
        done = {"type": "transcript.text.done", "text": text, "usage": usage}
        return StreamReply([*events, b"data: " + orjson.dumps(done) + b"\n\n"])
    parts = audio.segments(text, seconds)
    if fmt == "text":
        return RawReply([text.encode() + b"\n"], TEXT_PLAIN)
    if fmt == "srt":
        return RawReply([audio.srt(parts).encode()], TEXT_PLAIN)
    if fmt == "vtt":
        return RawReply([audio.vtt(parts).encode()], TEXT_PLAIN)
    if fmt == "verbose_json":
        verbose: dict[str, Any] = {
            "task": "translate" if translate else "transcribe",
            "language": "english",
            "duration": seconds,
            "text": text,
            "segments": [
                {
                    "id": i,
                    "seek": 0,
                    "start": s.start,
                    "end": s.end,
                    "text": " " + s.text,
                    "tokens": [50364 + i],
                    "temperature": float(body.get("temperature") or 0),
                    "avg_logprob": -0.25,
                    "compression_ratio": 1.2,
                    "no_speech_prob": 0.01,
                }
                for i, s in enumerate(parts)
            ],
        }
        if "word" in (body.get("timestamp_granularities") or []):
            verbose["words"] = [
                {"word": w, "start": round(i * seconds / len(text.split()), 3),
                 "end": round((i + 1) * seconds / len(text.split()), 3)}
                for i, w in enumerate(text.split())
            ]  # fmt: skip
        if not translate:
            verbose["usage"] = usage
        return JsonReply(verbose)
    out: dict[str, Any] = {"text": text}
    if not translate:
        out["usage"] = usage
    return JsonReply(out)
