"""Small real audio files for the tests, made here: WAV with Python's ``wave``, and the headers
of FLAC, MP3, Ogg (Opus) and MP4 files written byte by byte as their specifications lay them out.

Only WAV carries real sound (a tone); the other formats carry what a duration is read from,
which is all the gateway reads of them. :func:`form` wraps a file in the multipart form the
audio endpoints take, as the OpenAI SDK's encoder (httpx) writes it.
"""

from __future__ import annotations

import io
import math
import struct
import wave
from typing import Any

import httpx


def wav(seconds: float, rate: int = 16000, channels: int = 1, width: int = 2, freq: float = 440.0) -> bytes:
    """A PCM WAV file of a sine tone, ``seconds`` long (whole frames)."""
    frames = round(seconds * rate)
    amplitude = (1 << (8 * width - 1)) - 1
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        samples = bytearray()
        for i in range(frames):
            value = int(amplitude * 0.3 * math.sin(2 * math.pi * freq * i / rate))
            if width > 1:
                sample = value.to_bytes(width, "little", signed=True)
            else:
                sample = bytes([value // 256 + 128])
            samples += sample * channels
        w.writeframes(bytes(samples))
    return out.getvalue()


def wav_with_list_chunk(seconds: float, rate: int = 8000) -> bytes:
    """A WAV file whose ``data`` chunk comes after an odd-sized ``LIST`` chunk (padded to even)."""
    plain = wav(seconds, rate)
    fmt_end = 12 + 8 + 16
    info = b"INFOISFT\x05\x00\x00\x00test\x00"  # 17 bytes: padded with one zero byte
    chunk = b"LIST" + struct.pack("<I", len(info)) + info + b"\x00"
    body = plain[12:fmt_end] + chunk + plain[fmt_end:]
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def streaming_wav(seconds: float, rate: int = 16000) -> bytes:
    """A WAV file as a streaming writer makes it: sizes of 0xFFFFFFFF (unknown when written)."""
    plain = bytearray(wav(seconds, rate))
    plain[4:8] = b"\xff\xff\xff\xff"
    plain[40:44] = b"\xff\xff\xff\xff"
    return bytes(plain)


def flac_header(total_samples: int, rate: int = 44100, channels: int = 2, bits: int = 16) -> bytes:
    """``fLaC`` and a STREAMINFO block (the last metadata block), then a few bytes of frames."""
    info = struct.pack(">HH", 4096, 4096) + (0).to_bytes(3, "big") + (0).to_bytes(3, "big")
    packed = rate << 44 | (channels - 1) << 41 | (bits - 1) << 36 | total_samples
    info += packed.to_bytes(8, "big") + bytes(16)  # MD5 of the audio: zeros (unknown)
    return b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info + b"\xff\xf8" + bytes(64)


def id3v2(size: int) -> bytes:
    """An ID3v2.4 tag of ``size`` bytes of padding (its size in syncsafe bytes)."""
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    return b"ID3\x04\x00\x00" + syncsafe + bytes(size)


def _mp3_frame_header(bitrate_index: int = 9, rate_index: int = 0) -> bytes:
    """MPEG-1 layer III, no CRC, stereo: 128 kbit/s at 44.1 kHz by default."""
    return bytes([0xFF, 0xFB, bitrate_index << 4 | rate_index << 2, 0x00])


def mp3_cbr(frames: int) -> bytes:
    """``frames`` MPEG-1 layer III frames at 128 kbit/s, 32 kHz: 576 bytes each, no padding."""
    header = _mp3_frame_header(9, 2)  # 32000 Hz: 144 * 128000 / 32000 = 576 bytes per frame
    return (header + bytes(576 - 4)) * frames


def mp3_xing(frames: int) -> bytes:
    """A VBR MP3 whose first frame is a Xing header saying ``frames`` frames (44.1 kHz)."""
    header = _mp3_frame_header(9, 0)
    side_info = bytes(32)
    xing = b"Xing" + struct.pack(">II", 1, frames)
    first = header + side_info + xing
    first += bytes(417 - len(first))  # 144 * 128000 / 44100 = 417 bytes
    return first + (header + bytes(413)) * 3  # a few audio frames; the count comes from Xing


def _ogg_page(granule: int, sequence: int, body: bytes, flags: int = 0) -> bytes:
    segments = [255] * (len(body) // 255) + [len(body) % 255]
    header = b"OggS" + bytes([0, flags]) + struct.pack("<qIII", granule, 1, sequence, 0)
    return header + bytes([len(segments)]) + bytes(segments) + body


def ogg_opus(seconds: float, pre_skip: int = 312) -> bytes:
    """An Ogg Opus file: OpusHead, OpusTags, and audio pages whose last granule marks the end."""
    head = b"OpusHead" + bytes([1, 1]) + struct.pack("<HIhB", pre_skip, 48000, 0, 0)
    pages = [_ogg_page(0, 0, head, flags=2), _ogg_page(0, 1, b"OpusTags" + bytes(16))]
    end = round(seconds * 48000) + pre_skip
    for i, granule in enumerate((end // 3, 2 * end // 3, end)):
        pages.append(_ogg_page(granule, 2 + i, bytes(300), flags=4 if granule == end else 0))
    return b"".join(pages)


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def mp4(seconds: float, timescale: int = 600, moov_last: bool = True) -> bytes:
    """An M4A-shaped file: ftyp, mdat, moov (mvhd first) -- moov after mdat, as recorders write it."""
    times = struct.pack(">IIII", 0, 0, timescale, round(seconds * timescale))
    mvhd = _box(b"mvhd", bytes(4) + times + bytes(80))
    moov = _box(b"moov", mvhd + _box(b"trak", bytes(40)))
    ftyp = _box(b"ftyp", b"M4A \x00\x00\x00\x00M4A isom")
    mdat = _box(b"mdat", bytes(5000))
    return ftyp + (mdat + moov if moov_last else moov + mdat)


def form(
    fields: list[tuple[str, str]] | dict[str, Any], file: bytes | None = None, file_first: bool = False
) -> tuple[str, bytes]:
    """(content type, body) of a form as httpx (the OpenAI SDK's encoder) writes it."""
    if file is None:
        file = wav(0.75)
    files = {"file": ("speech.wav", file, "audio/wav")}
    if isinstance(fields, list):  # repeated names (name[]) as httpx takes them: a list per name
        grouped: dict[str, Any] = {}
        for name, value in fields:
            grouped.setdefault(name, []).append(value)
        fields = {k: v[0] if len(v) == 1 else v for k, v in grouped.items()}
    request = httpx.Request("POST", "http://x/v1/audio/transcriptions", data=fields, files=files)
    content_type, body = request.headers["content-type"], request.read()
    if file_first:  # httpx writes fields before files, as the SDKs do; put the file first instead
        delimiter = b"--" + content_type.split("boundary=")[1].encode()
        parts = body.split(delimiter)[1:-1]
        parts.sort(key=lambda part: b'name="file"' not in part)
        body = b"".join(delimiter + part for part in parts) + delimiter + b"--\r\n"
    return content_type, body
