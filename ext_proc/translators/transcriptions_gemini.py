"""OpenAI transcriptions and translations ⇄ Gemini's ``generateContent`` (audio understanding).

Gemini has no transcription endpoint: its documented way is to send the audio to
``generateContent`` as an ``inlineData`` part with a text part saying what to do, and that is
what :class:`GeminiAudioForm` writes, as the client's form passes:

- the file becomes ``inlineData`` base64 as its bytes arrive (three bytes to four characters,
  the remainder carried to the next chunk), its ``mimeType`` read from its first bytes (WAV,
  MP3, FLAC, Ogg, AIFF, AAC, MP4, WebM), else from the part's content type or file name;
- the instructions follow the audio, written once the form has ended, so that fields after the
  file count too: transcribe as spoken (``language``: the language to expect; ``prompt``,
  ``keywords[]``: context and spellings) or, for ``/translations``, translate into English;
- ``temperature`` → ``generationConfig.temperature``; ``verbose_json``, ``srt`` and ``vtt`` ask
  for JSON (``responseJsonSchema``: language, text, segments with start and end seconds) from
  which the gateway writes the format asked for; ``json`` and ``text`` ask for the text alone.

Refused, 400 ``unsupported_parameter``: ``timestamp_granularities[]`` with ``word`` (Gemini
gives no word timings), ``include[]`` (log probabilities), ``response_format: diarized_json``.
Dropped: ``chunking_strategy``, ``known_speaker_*``.

The answer becomes OpenAI's in the format asked for: ``json`` ``{"text", "usage"}``, ``text``,
``srt``, ``vtt`` (the last three as text), ``verbose_json`` (``task``, ``language``,
``duration``, ``text``, ``segments``); with ``stream: true`` (transcriptions) the answer,
once whole, is sent as OpenAI's stream events (one ``transcript.text.delta`` per segment of
text, then ``transcript.text.done``). The duration charged is Gemini's: its audio tokens ÷ 32
(Gemini counts 32 tokens per second of audio); without them the endpoint's own measure.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

import orjson

from ..errors import GatewayError
from ..form_stream import PartHead
from . import params, provider_errors
from . import usage as provider_usage
from .base import FormTranslator, FormUpstream, ResponseContext, Target, TranslatedResponse, Usage
from .gemini_api import GeminiTranslator, model_path

AUDIO_TOKENS_PER_SECOND = 32  # Gemini: "each second of audio is represented as 32 tokens"
SEGMENTED = ("verbose_json", "srt", "vtt")
TEXT_PLAIN = "text/plain; charset=utf-8"
_SNIFF_BYTES = 12
# (magic test, mime type) on a file's first bytes
_MAGIC: tuple[tuple[Any, str], ...] = (
    (lambda h: h[:4] == b"RIFF" and h[8:12] == b"WAVE", "audio/wav"),
    (lambda h: h[:4] == b"fLaC", "audio/flac"),
    (lambda h: h[:4] == b"OggS", "audio/ogg"),
    (lambda h: h[:4] == b"FORM" and h[8:12] in (b"AIFF", b"AIFC"), "audio/aiff"),
    (lambda h: h[:3] == b"ID3", "audio/mp3"),
    (lambda h: h[4:8] == b"ftyp", "audio/mp4"),
    (lambda h: h[:4] == b"\x1a\x45\xdf\xa3", "audio/webm"),
    (lambda h: len(h) > 1 and h[0] == 0xFF and h[1] & 0xF6 == 0xF0, "audio/aac"),  # ADTS
    (lambda h: len(h) > 1 and h[0] == 0xFF and h[1] & 0xE0 == 0xE0, "audio/mp3"),
)
_BY_EXTENSION = {
    "wav": "audio/wav",
    "mp3": "audio/mp3",
    "mpga": "audio/mp3",
    "mpeg": "audio/mp3",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "oga": "audio/ogg",
    "opus": "audio/ogg",
    "aiff": "audio/aiff",
    "aac": "audio/aac",
    "m4a": "audio/mp4",
    "mp4": "audio/mp4",
    "webm": "audio/webm",
}
_BY_TYPE = {"audio/x-wav": "audio/wav", "audio/wave": "audio/wav", "audio/mpeg": "audio/mp3"}
SEGMENTS_SCHEMA = {
    "type": "object",
    "properties": {
        "language": {"type": "string", "description": "the language spoken, its English name in lower case"},
        "text": {"type": "string"},
        "segments": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "start": {"type": "number", "description": "seconds from the start of the audio"},
                    "end": {"type": "number", "description": "seconds from the start of the audio"},
                    "text": {"type": "string"},
                },
                "required": ["start", "end", "text"],
            },
        },
    },
    "required": ["language", "text", "segments"],
}


def audio_mime(head: bytes, content_type: str, filename: str) -> str:
    """The file's type, from its first bytes, else its part's content type, else its name."""
    for matches, mime in _MAGIC:
        if matches(head):
            return mime
    if content_type.startswith("audio/"):
        return _BY_TYPE.get(content_type, content_type)
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return _BY_EXTENSION.get(extension, "application/octet-stream")


class GeminiAudioForm:
    """The client's form as a ``generateContent`` request body, written as it passes. A FormWriter."""

    __slots__ = (
        "_carry",
        "_field",
        "_fields",
        "_file",
        "_head",
        "_in_file",
        "_name",
        "_out",
        "_started",
        "_translate",
    )

    def __init__(self, translate: bool) -> None:
        self._translate = translate
        self._out: list[bytes] = []
        self._fields: dict[str, Any] = {}
        self._field = bytearray()
        self._name = ""  # the current field's name
        self._file: PartHead | None = None
        self._in_file = False
        self._started = False  # the inlineData part is open
        self._head = bytearray()  # the file's first bytes, until its type is known
        self._carry = b""  # 0-2 bytes not yet base64-encoded

    def part(self, head: PartHead) -> None:
        self._in_file = head.name == "file" and head.filename is not None
        if self._in_file:
            self._file = head
        else:
            self._field.clear()
            self._name = head.name

    def data(self, chunk: bytes) -> None:
        if not self._in_file:
            self._field += chunk
            return
        if not self._started:
            self._head += chunk
            if len(self._head) < _SNIFF_BYTES:
                return
            chunk = self._open_audio()
        self._encode(chunk)

    def part_end(self) -> None:
        if self._in_file:
            if not self._started:
                self._encode(self._open_audio())
            if self._carry:
                self._out.append(base64.b64encode(self._carry))
                self._carry = b""
            self._out.append(b'"}}')
            self._in_file = False
            return
        name = self._name
        value = self._field.decode("utf-8", "replace")
        if name.endswith("[]"):
            self._fields.setdefault(name[:-2], []).append(value)
        else:
            self._fields[name] = value

    def end(self) -> None:
        if self._file is None:
            raise GatewayError(
                400, "missing_required_parameter", "Missing required parameter: 'file'.", param="file"
            )
        request = generation(self._fields, self._translate)
        tail = orjson.dumps(request["tail_part"])
        config = orjson.dumps(request["generationConfig"])
        self._out.append(b"," + tail + b']}],"generationConfig":' + config + b"}")

    def take(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _open_audio(self) -> bytes:
        assert self._file is not None
        head = bytes(self._head)
        mime = audio_mime(head, self._file.content_type, self._file.filename or "")
        self._out.append(
            b'{"contents":[{"role":"user","parts":[{"inlineData":{"mimeType":'
            + orjson.dumps(mime)
            + b',"data":"'
        )
        self._started = True
        self._head.clear()
        return head

    def _encode(self, chunk: bytes) -> None:
        data = self._carry + chunk
        whole = len(data) - len(data) % 3
        self._carry = data[whole:]
        if whole:
            self._out.append(base64.b64encode(data[:whole]))


def generation(fields: Mapping[str, Any], translate: bool) -> dict[str, Any]:
    """The instructions part and the generation config of a form's fields; 400 for what Gemini
    cannot honour."""
    response_format = fields.get("response_format") or "json"
    if response_format not in ("json", "text", *SEGMENTED):
        params.unsupported(
            "response_format",
            f"response_format '{response_format}' is not supported by this model's provider",
        )
    if "word" in (fields.get("timestamp_granularities") or ()):
        params.unsupported(
            "timestamp_granularities", "word timestamps are not supported by this model's provider"
        )
    if fields.get("include"):
        params.unsupported("include", "include[] (logprobs) is not supported by this model's provider")
    if translate:
        ask = "Translate the speech in this audio into English text."
    else:
        ask = "Transcribe the speech in this audio exactly as spoken, in the language spoken."
        if isinstance(fields.get("language"), str) and fields["language"]:
            ask += f" The language spoken is ISO-639-1 '{fields['language']}'."
    if isinstance(fields.get("prompt"), str) and fields["prompt"]:
        ask += " Context, style and spellings to follow: " + fields["prompt"]
    keywords = fields.get("keywords") or []
    if keywords:
        ask += " Words and phrases that may occur: " + ", ".join(keywords) + "."
    config: dict[str, Any] = {}
    temperature = fields.get("temperature")
    if temperature is not None:
        config["temperature"] = float(temperature)
    if response_format in SEGMENTED:
        ask += (
            " Answer in JSON: the language spoken (its English name in lower case), the whole text,"
            " and the text in segments of a sentence or so, each with its start and end in seconds"
            " from the start of the audio."
        )
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = SEGMENTS_SCHEMA
    else:
        ask += " Answer with the text alone, nothing else."
    return {"tail_part": {"text": ask}, "generationConfig": config}


class TranscriptionsGemini(FormTranslator, GeminiTranslator):
    """Errors and unreadable answers as every Gemini pair reads them (gemini_api.py)."""

    __slots__ = ()

    endpoint = "audio_transcriptions"
    task = "transcribe"

    def form_request(self, target: Target, boundary: bytes) -> FormUpstream:
        path = f"{target.base_path}/v1beta/{model_path(target.upstream_model)}:generateContent"
        headers = {"x-goog-api-key": target.api_key, "content-type": "application/json"}
        return FormUpstream(path, headers, GeminiAudioForm(self.task == "translate"))

    def answer(self, doc: dict[str, Any], ctx: ResponseContext) -> TranslatedResponse:
        text = _candidate_text(doc)
        if text is None:
            return provider_errors.failed(
                400, "content_filter", "The provider refused to transcribe this audio.", "file"
            )
        usage = _usage(doc.get("usageMetadata"))
        seconds = usage.audio_ms / 1000 if usage.audio_ms else ctx.audio_ms / 1000
        fmt = ctx.request.get("response_format") or "json"
        if fmt in SEGMENTED:
            transcript = _segmented(text)
            if transcript is None:
                return provider_errors.failed(
                    502, "upstream_error", "The provider's transcript was not the JSON the gateway asked for."
                )
            language, whole, segments = transcript
            if not seconds and segments:
                seconds = max(s["end"] for s in segments)
        else:
            whole, language, segments = text.strip(), "", []
        billed = {"type": "duration", "seconds": math.ceil(seconds)} if seconds else None
        if _streamed(ctx):
            return TranslatedResponse(200, _events(whole, usage), usage, content_type="text/event-stream")
        if fmt == "text":
            return TranslatedResponse(200, whole.encode() + b"\n", usage, content_type=TEXT_PLAIN)
        if fmt == "srt":
            return TranslatedResponse(200, _srt(segments).encode(), usage, content_type=TEXT_PLAIN)
        if fmt == "vtt":
            return TranslatedResponse(200, _vtt(segments).encode(), usage, content_type=TEXT_PLAIN)
        out: dict[str, Any] = {"text": whole}
        if fmt == "verbose_json":
            out = {
                "task": self.task,
                "language": "english" if self.task == "translate" else language,
                "duration": round(seconds, 3),
                "text": whole,
                "segments": [
                    {
                        "id": i,
                        "seek": 0,
                        "start": s["start"],
                        "end": s["end"],
                        "text": s["text"],
                        "tokens": [],
                        "temperature": float(ctx.request.get("temperature") or 0),
                        "avg_logprob": 0.0,
                        "compression_ratio": 0.0,
                        "no_speech_prob": 0.0,
                    }
                    for i, s in enumerate(segments)
                ],
            }
        if billed is not None:
            out["usage"] = billed
        return TranslatedResponse(200, orjson.dumps(out), usage)


class TranslationsGemini(TranscriptionsGemini):
    __slots__ = ()

    endpoint = "audio_translations"
    task = "translate"


TRANSLATOR = TranscriptionsGemini()
TRANSLATIONS = TranslationsGemini()


def _streamed(ctx: ResponseContext) -> bool:
    value = ctx.request.get("stream")
    return isinstance(value, str) and value.strip().lower() in ("true", "1")


def _candidate_text(doc: Mapping[str, Any]) -> str | None:
    """The first candidate's text (thoughts left out); None when Gemini answered none (blocked)."""
    candidates = doc.get("candidates")
    if not isinstance(candidates, list) or not candidates or not isinstance(candidates[0], dict):
        return None
    parts = (candidates[0].get("content") or {}).get("parts") or []
    return "".join(
        p["text"]
        for p in parts
        if isinstance(p, dict) and isinstance(p.get("text"), str) and not p.get("thought")
    )


def _usage(raw: Any) -> Usage:
    """Gemini's tokens, and the seconds of audio its AUDIO prompt tokens stand for."""
    usage = provider_usage.gemini(raw) or Usage()
    if usage.rejected or not isinstance(raw, Mapping):
        return usage
    for detail in raw.get("promptTokensDetails") or ():
        if isinstance(detail, Mapping) and detail.get("modality") == "AUDIO":
            tokens = detail.get("tokenCount")
            ms, problem = provider_usage.audio_ms(
                tokens / AUDIO_TOKENS_PER_SECOND
                if isinstance(tokens, int) and not isinstance(tokens, bool)
                else tokens,
                "promptTokensDetails.AUDIO.tokenCount",
            )
            if problem:
                return Usage(rejected=problem)
            usage.audio_ms = ms
    return usage


def _segmented(text: str) -> tuple[str, str, list[dict[str, Any]]] | None:
    """(language, text, segments) of the JSON asked for; None when the answer is not that."""
    doc = provider_errors.json_or_none(text.encode())
    if not isinstance(doc, dict) or not isinstance(doc.get("segments"), list):
        return None
    segments: list[dict[str, Any]] = []
    for item in doc["segments"]:
        if not isinstance(item, dict):
            continue
        start, end, said = item.get("start"), item.get("end"), item.get("text")
        if isinstance(start, int | float) and isinstance(end, int | float) and isinstance(said, str):
            segments.append({"start": float(start), "end": float(max(start, end)), "text": said.strip()})
    whole = doc.get("text")
    if not isinstance(whole, str):
        whole = " ".join(s["text"] for s in segments)
    language = doc.get("language")
    return (language.lower() if isinstance(language, str) else ""), whole.strip(), segments


def _timestamp(seconds: float, separator: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{separator}{ms % 1000:03d}"


def _srt(segments: list[dict[str, Any]]) -> str:
    return "".join(
        f"{i}\n{_timestamp(s['start'], ',')} --> {_timestamp(s['end'], ',')}\n{s['text']}\n\n"
        for i, s in enumerate(segments, 1)
    )


def _vtt(segments: list[dict[str, Any]]) -> str:
    cues = "".join(
        f"{_timestamp(s['start'], '.')} --> {_timestamp(s['end'], '.')}\n{s['text']}\n\n" for s in segments
    )
    return "WEBVTT\n\n" + cues


def _events(text: str, usage: Usage) -> bytes:
    """A whole answer as OpenAI's transcription stream: deltas word by word, then the done event."""
    out = []
    words = text.split(" ")
    for i, word in enumerate(words):
        delta = word if i == 0 else " " + word
        out.append(b"data: " + orjson.dumps({"type": "transcript.text.delta", "delta": delta}) + b"\n\n")
    done = {
        "type": "transcript.text.done",
        "text": text,
        "usage": {
            "type": "tokens",
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
        },
    }
    out.append(b"data: " + orjson.dumps(done) + b"\n\n")
    return b"".join(out)
