"""Simulated speech and hearing, the same for every provider format.

* Speech: :func:`speech` speaks ``input`` as a real WAV tone of :data:`SECONDS_PER_CHAR` per
  character (a different pitch per text); other formats are that tone's length in frames of
  the format's container (MP3 frames, FLAC/Opus/AAC headers followed by filler), in the content
  types OpenAI answers with. The audio comes in :data:`SPEECH_CHUNKS` pieces, as a provider
  streams it.
* Hearing: :func:`heard_seconds` is an upload's duration: exact for WAV (Python's ``wave``),
  otherwise its size at 128 kbit/s. :func:`transcript` is what a simulated model "hears": a
  sentence naming the duration, so a test can tell which file was heard.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import struct
import wave
from dataclasses import dataclass

SECONDS_PER_CHAR = 0.05
SPEECH_CHUNKS = 4
RATE = 24000  # OpenAI's speech: 24 kHz, 16-bit mono
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
AUDIO_TOKENS_PER_SECOND = 32  # Gemini's documented rate


def _tone(text: str) -> bytes:
    """16-bit mono PCM at RATE: SECONDS_PER_CHAR per character, pitch from the text's hash."""
    frames = max(1, round(len(text) * SECONDS_PER_CHAR * RATE))
    freq = 200 + hashlib.sha256(text.encode()).digest()[0] * 2
    step = 2 * math.pi * freq / RATE
    return b"".join(struct.pack("<h", int(8000 * math.sin(step * i))) for i in range(frames))


def wav_bytes(pcm: bytes, rate: int = RATE) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def speech(text: str, response_format: str) -> tuple[bytes, str]:
    """(audio bytes, content type) of ``text`` spoken in ``response_format``."""
    pcm = _tone(text)
    seconds = len(pcm) / 2 / RATE
    if response_format == "wav":
        data = wav_bytes(pcm)
    elif response_format == "pcm":
        data = pcm
    elif response_format == "mp3":
        frames = max(1, math.ceil(seconds * 24000 / 1152))  # MPEG-2 layer III at 24 kHz, 64 kbit/s
        header = bytes([0xFF, 0xF3, 0x84, 0xC4])
        data = (header + bytes(192 - 4)) * frames
    elif response_format == "flac":
        total = len(pcm) // 2
        info = struct.pack(">HH", 4096, 4096) + bytes(6)
        info += (RATE << 44 | 0 << 41 | 15 << 36 | total).to_bytes(8, "big") + bytes(16)
        data = b"fLaC\x80" + len(info).to_bytes(3, "big") + info + pcm[: len(pcm) // 4]
    else:  # opus, aac: the container's first bytes, then filler of a plausible size
        magic = b"OggS" if response_format == "opus" else b"\xff\xf1\x50\x80"
        data = magic + bytes(max(16, round(seconds * 4000)))
    return data, CONTENT_TYPES[response_format]


def pieces(data: bytes, count: int = SPEECH_CHUNKS) -> list[bytes]:
    size = max(1, math.ceil(len(data) / count))
    return [data[i : i + size] for i in range(0, len(data), size)]


def heard_seconds(data: bytes) -> float:
    """An upload's duration: WAV exactly, anything else by its size at 128 kbit/s."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            return w.getnframes() / w.getframerate()
    except (wave.Error, EOFError, ZeroDivisionError):
        return len(data) / 16000


def is_readable(data: bytes) -> bool:
    """A file the simulated model can hear: a WAV file (whatever it sounds like), or any
    other container's bytes; an empty file cannot be heard."""
    return bool(data)


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


def transcript(seconds: float, translate: bool = False, language: str = "") -> str:
    what = "English translation" if translate else "transcript"
    said = f"This is a simulated {what} of {seconds:.2f} seconds of audio."
    if language and not translate:
        said += f" The language is {language}."
    return said


def segments(text: str, seconds: float) -> list[Segment]:
    """The text in sentence-sized segments spread evenly over the audio."""
    sentences = [s for s in re.split(r"(?<=\.)\s+", text.strip()) if s] or [text]
    step = seconds / len(sentences)
    return [Segment(round(i * step, 3), round((i + 1) * step, 3), s) for i, s in enumerate(sentences)]


def _stamp(seconds: float, separator: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}{separator}{ms % 1000:03d}"


def srt(parts: list[Segment]) -> str:
    return "".join(
        f"{i}\n{_stamp(s.start, ',')} --> {_stamp(s.end, ',')}\n{s.text}\n\n" for i, s in enumerate(parts, 1)
    )


def vtt(parts: list[Segment]) -> str:
    return "WEBVTT\n\n" + "".join(
        f"{_stamp(s.start, '.')} --> {_stamp(s.end, '.')}\n{s.text}\n\n" for s in parts
    )
