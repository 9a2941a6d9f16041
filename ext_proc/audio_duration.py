"""How long an uploaded audio file lasts, read from its bytes as they pass, never held whole.

A transcription is priced per second of audio. The provider's own figure is charged when it
gives one (OpenAI's ``usage.seconds`` or ``duration``, Gemini's audio tokens); otherwise the
gateway measures the file itself, here, from the headers each container carries:

========= =================================================================================
WAV       RIFF ``fmt `` chunk (byte rate) and the ``data`` chunk: data bytes ÷ byte rate. The
          bytes that actually arrived count, never more than the header declares (a header
          declaring 0 or 0xFFFFFFFF, as streaming writers do, means "to the end of the file").
FLAC      ``STREAMINFO``: total samples ÷ sample rate (unknown when the encoder wrote 0).
MP3       the first frame: a Xing/Info or VBRI header's frame count * samples per frame ÷
          sample rate; without one (constant bit rate), the audio's bytes * 8 ÷ bit rate.
Ogg       Vorbis or Opus: the last page's granule position ÷ sample rate (Opus: 48 kHz, less
          its pre-skip).
MP4/M4A   the ``moov/mvhd`` box: duration ÷ time scale, wherever ``moov`` sits in the file.
========= =================================================================================

Anything else (WebM, AAC in ADTS, a file it cannot read) has no measure (``None``); the
endpoint then charges an estimate from the file's size (ext_proc/endpoints/audio_transcriptions.py).
An ID3v2 tag before the audio (MP3, FLAC) is skipped by its declared size.

The parser of each format is a generator that asks for bytes (``_Read``: exactly n, fewer
only at the end of the file) or to pass over them (``_Skip``: n, answered with how many
passed); :class:`DurationMeter` feeds it from the chunks it is given. What it keeps is a
few hundred bytes of headers at a time, whatever the file's size.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Generator
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True, slots=True)
class _Read:
    n: int


@dataclass(frozen=True, slots=True)
class _Skip:
    n: int


# A format's parser: yields what it needs, receives bytes (for _Read) or a count (for _Skip),
# returns the duration in seconds (exact: a Fraction), or None when the file does not say.
_Parser = Generator[_Read | _Skip, bytes | int, Fraction | None]

_TO_END = 1 << 62  # a _Skip to the end of the file
_MP3_SYNC_WINDOW = 4096  # bytes searched for the first MP3 frame after any ID3 tag
_MAX_WAV_FMT = 1024  # a fmt chunk is 16 to 40 bytes; larger is not a WAV file we read
_MAX_MP4_DEPTH_BOXES = 4096  # boxes walked inside moov before giving up


class DurationMeter:
    """Fed a file's bytes in order (:meth:`feed`), then :meth:`finish`; :attr:`seconds` is the
    duration (an exact fraction), or None when the format is not one it reads. :attr:`size`
    counts every byte."""

    __slots__ = ("_buf", "_parser", "_skipped", "_want", "format", "seconds", "size")

    def __init__(self) -> None:
        self.size = 0
        self.format = ""  # wav | flac | mp3 | ogg | mp4 once recognised
        self.seconds: Fraction | None = None
        self._buf = bytearray()
        self._skipped = 0
        self._parser: _Parser | None = _sniff(self)
        self._want: _Read | _Skip | None = next(self._parser)

    def feed(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        view = memoryview(data)
        while view and self._want is not None:
            want = self._want
            if isinstance(want, _Skip):
                step = min(want.n - self._skipped, len(view))
                self._skipped += step
                view = view[step:]
                if self._skipped == want.n:
                    self._answer(self._skipped)
            else:
                step = min(want.n - len(self._buf), len(view))
                self._buf += view[:step]
                view = view[step:]
                if len(self._buf) == want.n:
                    self._answer(bytes(self._buf))

    def finish(self) -> Fraction | None:
        """The end of the file: short reads and skips are answered with what there was."""
        while self._want is not None:
            self._answer(self._skipped if isinstance(self._want, _Skip) else bytes(self._buf))
        return self.seconds

    @property
    def milliseconds(self) -> int | None:
        """The duration rounded up to the millisecond, or None."""
        if self.seconds is None:
            return None
        return math.ceil(self.seconds * 1000)

    def _answer(self, value: bytes | int) -> None:
        self._buf.clear()
        self._skipped = 0
        assert self._parser is not None
        try:
            want = self._parser.send(value)
            while want.n == 0:  # nothing to wait for
                want = self._parser.send(b"" if isinstance(want, _Read) else 0)
            self._want = want
        except StopIteration as done:
            self._want = None
            self._parser = None
            seconds = done.value
            self.seconds = seconds if seconds is not None and seconds >= 0 else None
        except (struct.error, ValueError, IndexError, ZeroDivisionError, OverflowError):
            self._want = None  # a malformed header: no measure
            self._parser = None


def _sniff(meter: DurationMeter) -> _Parser:
    head = yield _Read(12)
    assert isinstance(head, bytes)
    offset = 0
    if head.startswith(b"ID3") and len(head) >= 10:
        # ID3v2: 10-byte header, size in 4 syncsafe bytes (7 bits each), an optional footer
        size = (head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | head[9] & 0x7F
        footer = 10 if head[5] & 0x10 else 0
        tag_rest = 10 + size + footer - len(head)
        if tag_rest < 0:
            return None
        skipped = yield _Skip(tag_rest)
        if skipped != tag_rest:
            return None
        offset = 10 + size + footer
        head = yield _Read(12)
        assert isinstance(head, bytes)
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        meter.format = "wav"
        return (yield from _wav())
    if head.startswith(b"fLaC"):
        meter.format = "flac"
        return (yield from _flac(head))
    if head.startswith(b"OggS"):
        meter.format = "ogg"
        return (yield from _ogg(head))
    if head[4:8] == b"ftyp":
        meter.format = "mp4"
        return (yield from _mp4(head))
    if _mp3_frame(head, 0) is not None or offset:
        found = yield from _mp3(head)
        if found is not None:
            meter.format = "mp3"
        return found
    return None


# -- WAV ------------------------------------------------------------------------------------


def _wav() -> _Parser:
    byte_rate = 0
    while True:
        header = yield _Read(8)
        assert isinstance(header, bytes)
        if len(header) < 8:
            return None
        kind, size = header[:4], struct.unpack("<I", header[4:])[0]
        if kind == b"fmt ":
            if size < 16 or size > _MAX_WAV_FMT:
                return None
            fmt = yield _Read(size + (size & 1))
            assert isinstance(fmt, bytes)
            if len(fmt) < 16:
                return None
            _tag, _channels, _rate, byte_rate = struct.unpack("<HHII", fmt[:12])
        elif kind == b"data":
            if not byte_rate:
                return None
            declared = size if size not in (0, 0xFFFFFFFF) else _TO_END
            heard = yield _Skip(declared)
            assert isinstance(heard, int)
            return Fraction(heard, byte_rate)
        else:
            skipped = yield _Skip(size + (size & 1))  # chunks are padded to even sizes
            if skipped != size + (size & 1):
                return None


# -- FLAC -----------------------------------------------------------------------------------


def _flac(head: bytes) -> _Parser:
    # "fLaC", then STREAMINFO first: a 4-byte block header and 34 bytes of which 10..17 hold
    # sample rate (20 bits), channels (3), bits per sample (5), total samples (36).
    rest = yield _Read(4 + 18 - (len(head) - 4))
    assert isinstance(rest, bytes)
    block = (head[4:] + rest)[4:]
    if (head[4] & 0x7F) != 0 or len(block) < 18:
        return None
    packed = int.from_bytes(block[10:18], "big")
    rate = packed >> 44
    total = packed & ((1 << 36) - 1)
    if not rate or not total:
        return None
    return Fraction(total, rate)


# -- MP3 ------------------------------------------------------------------------------------

_MP3_BITRATES = {
    (3, 3): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),  # MPEG-1 layer I
    (3, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),  # MPEG-1 layer II
    (3, 1): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1 layer III
    (2, 3): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),  # MPEG-2/2.5 layer I
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG-2/2.5 layers II, III
    (2, 1): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


@dataclass(frozen=True, slots=True)
class _Frame:
    bitrate: int  # bits per second
    rate: int  # samples per second
    samples: int  # per frame
    info_at: int  # where a Xing/Info header would start, from the frame's first byte


def _mp3_frame(buf: bytes, i: int) -> _Frame | None:
    """The MPEG audio frame header at ``buf[i:i+4]``, if it is one."""
    if i + 4 > len(buf) or buf[i] != 0xFF or buf[i + 1] & 0xE0 != 0xE0:
        return None
    version, layer = (buf[i + 1] >> 3) & 3, (buf[i + 1] >> 1) & 3
    index, rate_index = buf[i + 2] >> 4, (buf[i + 2] >> 2) & 3
    if version == 1 or layer == 0 or index in (0, 15) or rate_index == 3:
        return None
    bitrate = _MP3_BITRATES[(3 if version == 3 else 2, layer)][index] * 1000
    rate = _MP3_RATES[version][rate_index]
    samples = 384 if layer == 3 else 1152 if (layer == 2 or version == 3) else 576
    mono = buf[i + 3] >> 6 == 3
    side = (17 if mono else 32) if version == 3 else (9 if mono else 17)
    return _Frame(bitrate, rate, samples, 4 + side)


def _mp3(head: bytes) -> _Parser:
    more = yield _Read(_MP3_SYNC_WINDOW)
    assert isinstance(more, bytes)
    buf = head + more
    start = next((i for i in range(len(buf) - 3) if _mp3_frame(buf, i) is not None), -1)
    if start < 0:
        return None
    frame = _mp3_frame(buf, start)
    assert frame is not None
    need = start + 36 + 18  # the VBRI header ends 18 bytes after offset 36
    if len(buf) < need:
        extra = yield _Read(need - len(buf))
        assert isinstance(extra, bytes)
        buf += extra
    tag = buf[start + frame.info_at : start + frame.info_at + 4]
    if tag in (b"Xing", b"Info"):
        at = start + frame.info_at + 4
        flags = int.from_bytes(buf[at : at + 4], "big")
        if flags & 1 and len(buf) >= at + 8:
            frames = int.from_bytes(buf[at + 4 : at + 8], "big")
            return Fraction(frames * frame.samples, frame.rate)
    if buf[start + 36 : start + 40] == b"VBRI":
        frames = int.from_bytes(buf[start + 50 : start + 54], "big")
        return Fraction(frames * frame.samples, frame.rate)
    rest = yield _Skip(_TO_END)
    assert isinstance(rest, int)
    audio_bytes = len(buf) - start + rest
    return Fraction(audio_bytes * 8, frame.bitrate)


# -- Ogg ------------------------------------------------------------------------------------


def _ogg(head: bytes) -> _Parser:
    rate = 0
    pre_skip = 0
    granule = -1
    buf = head
    first = True
    while True:
        more = yield _Read(27 - len(buf))
        assert isinstance(more, bytes)
        page = buf + more
        buf = b""
        if len(page) < 27 or not page.startswith(b"OggS"):
            break
        position = struct.unpack("<q", page[6:14])[0]
        segments = yield _Read(page[26])
        assert isinstance(segments, bytes)
        body_size = sum(segments)
        if first:
            body = yield _Read(body_size)
            assert isinstance(body, bytes)
            if body.startswith(b"\x01vorbis") and len(body) >= 16:
                rate = struct.unpack("<I", body[12:16])[0]
            elif body.startswith(b"OpusHead") and len(body) >= 12:
                rate, pre_skip = 48000, struct.unpack("<H", body[10:12])[0]
            else:
                return None
            first = False
        else:
            skipped = yield _Skip(body_size)
            if skipped != body_size:
                break
        if position >= 0:
            granule = position
    if not rate or granule < 0:
        return None
    return Fraction(max(0, granule - pre_skip), rate)


# -- MP4 / M4A ------------------------------------------------------------------------------


def _mp4(head: bytes) -> _Parser:
    pending = head[:8]
    extra = head[8:]
    while True:
        if len(pending) < 8:
            more = yield _Read(8 - len(pending))
            assert isinstance(more, bytes)
            pending += more
            if len(pending) < 8:
                return None
        size, kind = struct.unpack(">I", pending[:4])[0], pending[4:8]
        pending = b""
        header = 8
        if size == 1:  # a 64-bit size follows the type
            large = yield _Read(8 - len(extra))
            assert isinstance(large, bytes)
            size, header, extra = struct.unpack(">Q", extra + large)[0], 16, b""
        if kind == b"moov":
            return (yield from _mvhd(extra))
        body = _TO_END if size == 0 else size - header - len(extra)
        if body < 0:
            return None
        extra = b""
        skipped = yield _Skip(body)
        if size == 0 or skipped != body:
            return None


def _mvhd(extra: bytes) -> _Parser:
    pending = extra
    for _ in range(_MAX_MP4_DEPTH_BOXES):
        if len(pending) < 8:
            more = yield _Read(8 - len(pending))
            assert isinstance(more, bytes)
            pending += more
            if len(pending) < 8:
                return None
        size, kind = struct.unpack(">I", pending[:4])[0], pending[4:8]
        rest, pending = pending[8:], b""
        if kind == b"mvhd":
            more = yield _Read(max(0, 32 - len(rest)))
            assert isinstance(more, bytes)
            box = rest + more
            if box[0] == 1:
                scale, duration = struct.unpack(">IQ", box[20:32])
            else:
                scale, duration = struct.unpack(">II", box[12:20])
            return Fraction(duration, scale) if scale else None
        if size < 8:
            return None
        body = size - 8 - len(rest)
        if body < 0:
            return None
        skipped = yield _Skip(body)
        if skipped != body:
            return None
    return None
