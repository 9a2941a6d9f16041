"""The simulators hear and speak: OpenAI's audio endpoints in OpenAI's shapes (checked against its
OpenAPI spec), refusing what OpenAI refuses; Gemini's generateContent with inline audio."""

from __future__ import annotations

import base64
import io
import wave

import httpx
import openai
import pytest
from sim_checks import KEYS, Checks

from simulators import audio
from simulators.testing import SimulatorProcess
from tests import audio_samples


@pytest.fixture
def client(openai_sim: SimulatorProcess) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEYS["openai"], base_url=openai_sim.base_url, max_retries=0)


@pytest.mark.parametrize(
    ("fmt", "content_type", "magic"),
    [("wav", "audio/wav", b"RIFF"), ("mp3", "audio/mpeg", b"\xff\xf3"), ("flac", "audio/flac", b"fLaC")],
)
def test_speech_in_each_format(client: openai.OpenAI, fmt: str, content_type: str, magic: bytes) -> None:
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="alloy",
        input="Hello there, listener.",
        response_format=fmt,  # type: ignore[arg-type]
    ) as response:
        assert response.headers["content-type"] == content_type
        data = response.read()
    assert data.startswith(magic)
    if fmt == "wav":
        with wave.open(io.BytesIO(data)) as w:  # 22 characters at 0.05 s each
            assert w.getnframes() / w.getframerate() == pytest.approx(22 * audio.SECONDS_PER_CHAR)


def test_speech_streamed_as_sse_events(openai_sim: SimulatorProcess, checks: Checks) -> None:
    body = {"model": "gpt-4o-mini-tts", "voice": "alloy", "input": "Two words", "stream_format": "sse"}
    response = httpx.post(
        f"{openai_sim.base_url}/audio/speech",
        json=body,
        headers={"authorization": f"Bearer {KEYS['openai']}"},
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    import json

    docs = [json.loads(e) for e in events]
    for doc in docs:
        checks.openai_doc(doc, "CreateSpeechResponseStreamEvent")
    assert [d["type"] for d in docs][-1] == "speech.audio.done"
    pcm = b"".join(base64.b64decode(d["audio"]) for d in docs[:-1])
    assert len(pcm) == round(9 * audio.SECONDS_PER_CHAR * audio.RATE) * 2


def test_speech_refuses_what_openai_refuses(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.speech.create(model="tts-1", voice="alloy", input="x", speed=9)
    assert "speed" in str(err.value)
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model="tts-1", voice="alloy", input="x", stream_format="sse")


def test_a_transcription_in_every_format(client: openai.OpenAI, checks: Checks) -> None:
    wav = audio_samples.wav(1.5)
    doc = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav, "audio/wav"))
    assert doc.text == "This is a simulated transcript of 1.50 seconds of audio."
    assert doc.usage is not None and doc.usage.type == "duration" and doc.usage.seconds == 2
    checks.openai_doc(doc.model_dump(exclude_none=True), "CreateTranscriptionResponseJson")
    verbose = client.audio.transcriptions.create(
        model="whisper-1",
        file=("a.wav", wav),
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    checks.openai_doc(verbose.model_dump(exclude_none=True), "CreateTranscriptionResponseVerboseJson")
    assert verbose.duration == 1.5 and verbose.words
    text = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav), response_format="text")
    assert text == "This is a simulated transcript of 1.50 seconds of audio.\n"
    srt = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav), response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,500\nThis is")
    vtt = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav), response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n")


def test_token_priced_models_answer_tokens_and_stream(client: openai.OpenAI, checks: Checks) -> None:
    wav = audio_samples.wav(1.0)
    doc = client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", wav))
    assert doc.usage is not None and doc.usage.type == "tokens"
    events = list(
        client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", wav), stream=True)
    )
    for event in events:
        checks.openai_doc(event.model_dump(exclude_none=True), "CreateTranscriptionResponseStreamEvent")
    assert events[-1].type == "transcript.text.done" and events[-1].text == doc.text
    with pytest.raises(openai.BadRequestError) as err:
        client.audio.transcriptions.create(
            model="gpt-4o-transcribe", file=("a.wav", wav), response_format="verbose_json"
        )
    assert err.value.code == "unsupported_value"


def test_a_translation(client: openai.OpenAI) -> None:
    doc = client.audio.translations.create(model="whisper-1", file=("a.wav", audio_samples.wav(0.5)))
    assert doc.text == "This is a simulated English translation of 0.50 seconds of audio."


def test_forms_are_checked_against_the_spec(openai_sim: SimulatorProcess) -> None:
    auth = {"authorization": f"Bearer {KEYS['openai']}"}
    url = f"{openai_sim.base_url}/audio/transcriptions"
    files = {"file": ("a.wav", audio_samples.wav(0.1), "audio/wav")}
    missing = httpx.post(url, data={"language": "en"}, files=files, headers=auth)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "model"
    unknown = httpx.post(url, data={"model": "whisper-1", "colour": "red"}, files=files, headers=auth)
    assert unknown.status_code == 400 and "colour" in unknown.json()["error"]["message"]
    typed = httpx.post(url, data={"model": "whisper-1", "temperature": "warm"}, files=files, headers=auth)
    assert typed.status_code == 400 and typed.json()["error"]["param"] == "temperature"
    no_file = httpx.post(url, data={"model": "whisper-1"}, files={"x": ("", b"")}, headers=auth)
    assert no_file.status_code == 400
    logged = openai_sim.requests()[-3]["body"]
    assert logged["form"] == {"model": "whisper-1", "colour": "red"}
    assert logged["files"]["file"] == {
        "filename": "a.wav",
        "content_type": "audio/wav",
        "size": len(files["file"][1]),
    }


def test_gemini_hears_inline_audio(google_sim: SimulatorProcess, checks: Checks) -> None:
    data = base64.b64encode(audio_samples.wav(2.0)).decode()
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"inlineData": {"mimeType": "audio/wav", "data": data}},
                    {"text": "Transcribe this."},
                ],
            }
        ]
    }
    url = f"{google_sim.base_url}/v1beta/models/gemini-2.5-flash:generateContent"
    answer = httpx.post(url, json=body, headers={"x-goog-api-key": KEYS["google"]}).json()
    assert not checks.providers.response("gemini-response", httpx.Response(200, json=answer).text)
    assert answer["candidates"][0]["content"]["parts"][0]["text"] == (
        "This is a simulated transcript of 2.00 seconds of audio."
    )
    details = {d["modality"]: d["tokenCount"] for d in answer["usageMetadata"]["promptTokensDetails"]}
    assert details["AUDIO"] == 64
    body["contents"][0]["parts"][0]["inlineData"]["mimeType"] = "application/octet-stream"
    refused = httpx.post(url, json=body, headers={"x-goog-api-key": KEYS["google"]})
    assert refused.status_code == 400
