"""An audio upload read as it passes: the form's fields kept, its file measured, the body
rewritten for the provider -- the same whatever the chunks' sizes, never the whole file held."""

from __future__ import annotations

import base64
from fractions import Fraction

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ext_proc.audio_upload import MAX_FIELD_BYTES, UploadStream
from ext_proc.errors import GatewayError
from ext_proc.translators.transcriptions_gemini import GeminiAudioForm
from ext_proc.translators.transcriptions_openai import PassthroughForm
from simulators import forms
from tests import audio_samples
from tests.audio_samples import form

WAV = audio_samples.wav(0.75)


def feed(stream: UploadStream, body: bytes, cuts: list[int] | None = None) -> bytes:
    """Feed ``body`` cut at ``cuts``; returns what the writer wrote, chunk after chunk."""
    points = sorted({c % (len(body) + 1) for c in cuts or []})
    out = []
    start = 0
    for point in [*points, len(body)]:
        stream.feed(body[start:point])
        out.append(stream.take())
        start = point
    stream.finish()
    return b"".join(out)


def passthrough(
    content_type: str, body: bytes, cuts: list[int] | None = None, model: str = "whisper-large"
) -> bytes:
    stream = UploadStream(content_type)
    points = sorted({c % (len(body) + 1) for c in cuts or []})
    out = []
    start = 0
    for point in [*points, len(body)]:
        stream.feed(body[start:point])
        if stream.model_ready and not stream.started:
            boundary = content_type.split("boundary=")[1].encode()
            stream.start(PassthroughForm(boundary, model))
        out.append(stream.take())
        start = point
    stream.finish()
    return b"".join(out)


FIELDS = [("model", "whisper-1"), ("language", "en"), ("response_format", "verbose_json")]


def test_the_form_is_written_again_byte_for_byte_but_the_model() -> None:
    content_type, body = form([*FIELDS, ("timestamp_granularities[]", "segment")])
    out = passthrough(content_type, body)
    assert out == body.replace(b"\r\n\r\nwhisper-1\r\n", b"\r\n\r\nwhisper-large\r\n")
    parsed = forms.parse(content_type, out)
    assert parsed.fields["model"] == "whisper-large" and parsed.files["file"].data == WAV


@settings(max_examples=80, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_any_split_of_the_chunks_writes_the_same_body(cuts: list[int]) -> None:
    content_type, body = form([*FIELDS, ("prompt", "Spell it Infery.")])
    assert passthrough(content_type, body, cuts) == passthrough(content_type, body)


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_any_split_keeps_the_same_fields_and_measure(cuts: list[int]) -> None:
    content_type, body = form(
        [*FIELDS, ("timestamp_granularities[]", "word"), ("timestamp_granularities[]", "segment")]
    )
    stream = UploadStream(content_type)
    feed(stream, body, cuts)
    assert stream.fields == {
        "model": "whisper-1",
        "language": "en",
        "response_format": "verbose_json",
        "timestamp_granularities": ["word", "segment"],
    }
    assert stream.file is not None and stream.file.size == len(WAV)
    assert stream.file.filename == "speech.wav" and stream.file.content_type == "audio/wav"
    assert stream.file.meter.seconds == Fraction(3, 4)


def test_one_byte_at_a_time() -> None:
    content_type, body = form(FIELDS)
    assert passthrough(content_type, body, list(range(len(body)))) == passthrough(content_type, body)


def test_a_model_after_the_file_is_waited_for_within_the_lookahead() -> None:
    content_type, body = form([("model", "gemini"), ("response_format", "text")], file_first=True)
    assert body.index(b'name="file"') < body.index(b'name="model"')
    stream = UploadStream(content_type, lookahead=len(body))
    writer = GeminiAudioForm(translate=False)
    for i in range(0, len(body), 1000):
        stream.feed(body[i : i + 1000])
        if stream.model_ready and not stream.started:
            stream.start(writer)
        if not stream.started:
            assert stream.take() == b""  # nothing can be written before the provider is known
    stream.finish()
    request = orjson.loads(stream.take())
    inline = request["contents"][0]["parts"][0]["inlineData"]
    assert inline["mimeType"] == "audio/wav"
    assert base64.b64decode(inline["data"]) == WAV


def test_a_model_after_a_file_larger_than_the_lookahead_is_refused() -> None:
    content_type, body = form([("model", "whisper-1")], file=audio_samples.wav(2.0), file_first=True)
    stream = UploadStream(content_type, lookahead=10_000)
    with pytest.raises(GatewayError) as err:
        for i in range(0, len(body), 4096):
            stream.feed(body[i : i + 4096])
    assert (err.value.status, err.value.code, err.value.param) == (400, "invalid_request", "model")
    assert "before the file" in err.value.message


def test_a_body_going_upstream_unchanged_keeps_nothing() -> None:
    content_type, body = form(FIELDS, file=audio_samples.streaming_wav(3.0))
    stream = UploadStream(content_type, lookahead=1000)
    stream.feed(body[:600])
    assert stream.model_ready
    stream.start(None)  # a fallback chain: each attempt writes its own body
    for i in range(600, len(body), 8192):
        stream.feed(body[i : i + 8192])
        assert stream.take() == b""
    stream.finish()
    assert stream.file is not None and stream.file.meter.milliseconds == 3000


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("application/json", b"{}", "multipart/form-data"),
        ("multipart/form-data", b"", "boundary"),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nno-colon-here\r\n\r\n", "malformed"),
        ("multipart/form-data; boundary=xyz", b"--abc\r\n", "malformed"),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1',
            "ended before",
        ),
        (
            "multipart/form-data; boundary=xyz",
            b"--xyz\r\nContent-Type: text/plain\r\n\r\nx\r\n--xyz--\r\n",
            "malformed",
        ),
    ],
)
def test_a_body_that_is_not_a_form_is_the_clients_400(content_type: str, body: bytes, message: str) -> None:
    with pytest.raises(GatewayError) as err:
        stream = UploadStream(content_type)
        stream.feed(body)
        stream.finish()
    assert (err.value.status, err.value.code) == (400, "invalid_request")
    assert message in err.value.message


def test_limits_on_fields_parts_and_files() -> None:
    content_type, body = form([("model", "whisper-1"), ("prompt", "x" * (MAX_FIELD_BYTES + 1))])
    with pytest.raises(GatewayError, match="larger than") as err:
        UploadStream(content_type).feed(body)
    assert err.value.param == "prompt"
    content_type, body = form([("model", "m")] + [(f"f{i}", "v") for i in range(70)])
    with pytest.raises(GatewayError, match="more than 64 parts"):
        UploadStream(content_type).feed(body)
    request = httpx.Request(
        "POST", "http://x", data={"model": "m"}, files=[("file", ("a.wav", WAV)), ("file", ("b.wav", WAV))]
    )
    with pytest.raises(GatewayError, match="more than one file"):
        UploadStream(request.headers["content-type"]).feed(request.read())


def test_a_form_without_its_file_is_refused_at_its_end() -> None:
    content_type = "multipart/form-data; boundary=b0"
    body = b'--b0\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--b0--\r\n'
    stream = UploadStream(content_type)
    stream.feed(body)
    with pytest.raises(GatewayError) as err:
        stream.finish()
    assert (err.value.code, err.value.param) == ("missing_required_parameter", "file")
