"""The gateway's own measure of an uploaded audio file, for each container it reads, fed in
arbitrary pieces: the duration never depends on how the bytes were split."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ext_proc.audio_duration import DurationMeter
from tests import audio_samples


def measure(data: bytes, cuts: list[int] | None = None) -> DurationMeter:
    meter = DurationMeter()
    points = sorted({c % (len(data) + 1) for c in cuts or []})
    start = 0
    for point in [*points, len(data)]:
        meter.feed(data[start:point])
        start = point
    meter.finish()
    return meter


SAMPLES = {
    "wav": (audio_samples.wav(1.25), Fraction(5, 4)),
    "wav 8-bit stereo": (audio_samples.wav(0.5, rate=8000, channels=2, width=1), Fraction(1, 2)),
    "wav with a LIST chunk": (audio_samples.wav_with_list_chunk(0.75), Fraction(3, 4)),
    "wav from a streaming writer": (audio_samples.streaming_wav(2.0), Fraction(2)),
    "flac": (audio_samples.flac_header(44100 * 3 + 22050), Fraction(7, 2)),
    "flac after an ID3 tag": (audio_samples.id3v2(300) + audio_samples.flac_header(88200), Fraction(2)),
    "mp3 cbr": (audio_samples.mp3_cbr(50), Fraction(50 * 1152, 32000)),
    "mp3 cbr after an ID3 tag": (
        audio_samples.id3v2(5000) + audio_samples.mp3_cbr(20),
        Fraction(20 * 1152, 32000),
    ),
    "mp3 xing": (audio_samples.mp3_xing(1000), Fraction(1000 * 1152, 44100)),
    "ogg opus": (audio_samples.ogg_opus(2.5), Fraction(5, 2)),
    "m4a, moov last": (audio_samples.mp4(4.5), Fraction(9, 2)),
    "m4a, moov first": (audio_samples.mp4(1.0, timescale=44100, moov_last=False), Fraction(1)),
}


@pytest.mark.parametrize("name", SAMPLES)
def test_each_format_is_measured_exactly(name: str) -> None:
    data, seconds = SAMPLES[name]
    meter = measure(data)
    assert meter.seconds == seconds
    assert meter.size == len(data)
    assert meter.format == name.split()[0].replace("m4a,", "mp4")


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(SAMPLES)), cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_any_split_of_the_bytes_gives_the_same_duration(name: str, cuts: list[int]) -> None:
    data, seconds = SAMPLES[name]
    assert measure(data, cuts).seconds == seconds


def test_one_byte_at_a_time() -> None:
    data, seconds = SAMPLES["mp3 xing"]
    meter = DurationMeter()
    for i in range(len(data)):
        meter.feed(data[i : i + 1])
    assert meter.finish() == seconds


def test_milliseconds_round_up_and_are_exact() -> None:
    meter = measure(audio_samples.wav(0.3, rate=10))  # 3 frames of 2 bytes at 20 bytes/s: exactly 0.3 s
    assert meter.seconds == Fraction(3, 10) and meter.milliseconds == 300
    odd = measure(audio_samples.wav(1 / 3, rate=3000))  # 1000 frames at 3000/s
    assert odd.milliseconds == 334


def test_a_truncated_wav_counts_the_audio_that_arrived() -> None:
    data = audio_samples.wav(2.0)  # 64000 bytes of data at 32000 bytes/s
    assert measure(data[: 44 + 16000]).seconds == Fraction(1, 2)


def test_a_wav_declaring_more_than_it_has_or_trailing_bytes_counts_only_its_data() -> None:
    data = audio_samples.wav(1.0) + b"LIST" + bytes(4000)  # junk after the data chunk
    assert measure(data).seconds == 1


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not audio at all, just text",
        b"RIFF\x00\x00\x00\x00WAVEdata\x10\x00\x00\x00" + bytes(16),  # data before any fmt
        b"RIFF\x00\x00\x00\x00WAVEfmt \x02\x00\x00\x00" + bytes(40),  # a fmt chunk too small
        audio_samples.flac_header(0),  # total samples unknown
        b"\x1a\x45\xdf\xa3" + bytes(100),  # WebM/Matroska: not read
        b"OggS" + bytes(40),  # an Ogg page that is neither Vorbis nor Opus
    ],
)
def test_what_it_cannot_read_has_no_measure(data: bytes) -> None:
    meter = measure(data)
    assert meter.seconds is None and meter.milliseconds is None
    assert meter.size == len(data)


def test_it_keeps_only_headers_whatever_the_file_size() -> None:
    meter = DurationMeter()
    meter.feed(audio_samples.streaming_wav(0.01)[:44])  # a data chunk "to the end of the file"
    for _ in range(200):
        meter.feed(bytes(65536))  # 12.8 MB of audio data
        assert len(meter._buf) == 0
    assert meter.finish() == Fraction(200 * 65536, 32000)
