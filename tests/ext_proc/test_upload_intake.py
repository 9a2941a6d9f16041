"""The ext_proc answers of an upload: none until its model has passed, then the headers' answer
and one per chunk held (the provider's body on the last, nothing on those before, or every chunk
unchanged for a chain's attempts to write), then one per chunk as it comes."""

from __future__ import annotations

import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from ext_proc import envoy_messages as msg
from ext_proc.errors import GatewayError
from ext_proc.translators.transcriptions_openai import PassthroughForm
from ext_proc.upload_intake import UploadIntake
from simulators import forms
from tests import audio_samples

HEADERS = msg.request_headers([("x-request-id", "r")], clear_route_cache=True)


def chunks(body: bytes, size: int) -> list[ep.HttpBody]:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return [ep.HttpBody(body=p, end_of_stream=i == len(pieces) - 1) for i, p in enumerate(pieces)]


def body_of(answer: ep.ProcessingResponse) -> bytes | None:
    common = answer.request_body.response
    if not common.HasField("body_mutation"):
        return None
    return b"" if common.body_mutation.clear_body else common.body_mutation.body


def test_answers_are_held_until_the_model_then_owed_in_order() -> None:
    content_type, body = audio_samples.form({"model": "hear"}, audio_samples.wav(0.5), file_first=True)
    intake = UploadIntake(content_type, lookahead=len(body), max_bytes=10**8, length=str(len(body)))
    pieces = chunks(body, 1000)
    held = 0
    for piece in pieces:
        held += 1
        if intake.feed(piece):
            break
    assert held > 3  # the model came after the file: several chunks waited
    boundary = content_type.split("boundary=")[1].encode()
    answers = intake.route(HEADERS, PassthroughForm(boundary, "whisper-1"))
    assert answers[0] is HEADERS and len(answers) == 1 + held
    assert all(body_of(a) == b"" for a in answers[1:-1])  # cleared: their bytes go with the last
    written = body_of(answers[-1]) or b""
    written += b"".join(body_of(intake.next(p)) or b"" for p in pieces[held:])
    parsed = forms.parse(content_type, written)
    assert parsed.fields["model"] == "whisper-1" and parsed.files["file"].data == audio_samples.wav(0.5)
    assert intake.measured_ms == 500 and intake.file_bytes == len(audio_samples.wav(0.5))


def test_a_chains_chunks_go_on_unchanged() -> None:
    content_type, body = audio_samples.form({"model": "hear"}, audio_samples.wav(0.2))
    intake = UploadIntake(content_type, lookahead=1000, max_bytes=10**8)
    pieces = chunks(body, 4096)
    assert intake.feed(pieces[0])  # the fields come first: the model is in the first chunk
    answers = intake.route(HEADERS, None)
    assert len(answers) == 2 and body_of(answers[1]) is None
    assert all(body_of(intake.next(p)) is None for p in pieces[1:])


def test_a_size_over_the_limit_is_413_from_its_header_or_as_it_passes() -> None:
    content_type, body = audio_samples.form({"model": "hear"}, audio_samples.wav(1.0))
    with pytest.raises(GatewayError) as err:
        UploadIntake(content_type, lookahead=1000, max_bytes=1000, length=str(len(body)))
    assert (err.value.status, err.value.code) == (413, "request_too_large")
    intake = UploadIntake(content_type, lookahead=1000, max_bytes=5000)  # no Content-Length
    with pytest.raises(GatewayError) as err:
        for piece in chunks(body, 2048):
            if intake.feed(piece):
                intake.route(HEADERS, None)
                break
        for piece in chunks(body, 2048)[1:]:
            intake.next(piece)
    assert err.value.status == 413
