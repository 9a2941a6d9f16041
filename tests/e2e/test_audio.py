"""Audio through the gateway with the OpenAI SDK: speech bytes streamed as made and charged per
character; transcriptions and translations of real WAV files, read as they pass, charged per second
heard, for an OpenAI and a Gemini model; a fallback chain; what a provider cannot serve."""

from __future__ import annotations

import base64
import io
import json
import time
import wave
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from infery.stack import Stack
from simulators.testing import SimulatorProcess
from tests import audio_samples
from tests.conformance import assert_openai
from tests.e2e.support import MAX_REQUEST_BYTES, PRICES, Admin, Tenant, eventually

UNPRICED = {k: None for k in PRICES}
PER_MCHAR = Decimal("15")
PER_SECOND = Decimal("0.0001")
GEMINI_PER_SECOND = Decimal("0.000032")
MILLION = Decimal(1_000_000)
SPOKEN = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def audio(
    admin: Admin, three_formats: dict[str, SimulatorProcess], tenant: Tenant, gateway: Stack
) -> openai.OpenAI:
    """Speech and hearing models on the session gateway; slugs differ from the providers' names,
    so a test can see each was rewritten."""
    admin.model("speak", "sim-openai", "tts-1", {**UNPRICED, "per_mchar": str(PER_MCHAR)})
    admin.model("hear", "sim-openai", "whisper-1", {**UNPRICED, "per_audio_second": str(PER_SECOND)})
    admin.model(
        "hear-4o", "sim-openai", "gpt-4o-transcribe", {**UNPRICED, "per_audio_second": str(PER_SECOND)}
    )
    admin.model(
        "hear-gemini",
        "sim-google",
        "gemini-2.5-flash",
        {**UNPRICED, "per_audio_second": str(GEMINI_PER_SECOND)},
    )
    admin.model("hear-chain", "sim-openai", "whisper-1", {**UNPRICED, "per_audio_second": str(PER_SECOND)})
    admin.call("PUT", "/routes/hear-chain", {"fallbacks": ["hear-gemini"], "retry_on": ["5xx"]})
    client = tenant.client(gateway, timeout=30)
    eventually(lambda: {"speak", "hear", "hear-gemini", "hear-chain"} <= {m.id for m in client.models.list()})
    return client


def record_of(admin: Admin, headers: Any) -> dict[str, Any]:
    return eventually(lambda: admin.usage_record(headers["x-request-id"]))  # type: ignore[no-any-return]


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as w:
        return w.getnframes() / w.getframerate()


# -- speech ---------------------------------------------------------------------------------


def test_speech_bytes_content_type_and_credits(
    audio: openai.OpenAI, admin: Admin, openai_sim: SimulatorProcess
):
    raw = audio.audio.speech.with_raw_response.create(
        model="speak", voice="alloy", input=SPOKEN, response_format="wav"
    )
    data = raw.http_response.content
    assert raw.headers["content-type"] == "audio/wav"
    assert wav_seconds(data) == pytest.approx(len(SPOKEN) * 0.05)  # the simulator's 50 ms a character
    credits = Decimal(raw.headers["x-credits-used"])
    assert credits == len(SPOKEN) * PER_MCHAR / MILLION
    assert raw.headers["x-model-used"] == "speak"
    assert openai_sim.requests()[-1]["body"]["model"] == "tts-1"  # the provider's name went upstream
    record = record_of(admin, raw.headers)
    assert record["endpoint"] == "/v1/audio/speech" and record["characters"] == len(SPOKEN)
    assert Decimal(record["credits"]) == credits and record["status"] == 200


def test_speech_streams_as_the_provider_makes_it(
    audio: openai.OpenAI, gateway: Stack, tenant: Tenant, openai_sim: SimulatorProcess
):
    openai_sim.script([{"chunk_delay_ms": 400}])  # four pieces, 0.4 s apart
    body = {"model": "speak", "voice": "alloy", "input": SPOKEN, "response_format": "mp3"}
    started = time.monotonic()
    pieces = []
    with httpx.stream(
        "POST",
        f"{gateway.base_url}/audio/speech",
        json=body,
        headers={"authorization": f"Bearer {tenant.key}"},
        timeout=30,
    ) as response:
        assert response.headers["content-type"] == "audio/mpeg", response.read()
        assert Decimal(response.headers["x-credits-used"]) == len(SPOKEN) * PER_MCHAR / MILLION
        for piece in response.iter_raw():
            pieces.append((time.monotonic() - started, len(piece)))
    first, last = pieces[0][0], pieces[-1][0]
    assert last - first >= 0.8, pieces  # the first bytes came long before the last: never buffered whole


def test_speech_as_sse_events_passes_through(audio: openai.OpenAI, admin: Admin):
    admin.model("speak-4o", "sim-openai", "gpt-4o-mini-tts", {**UNPRICED, "per_mchar": "12"})
    eventually(lambda: "speak-4o" in {m.id for m in audio.models.list()})
    raw = audio.audio.speech.with_raw_response.create(
        model="speak-4o", voice="alloy", input="Two words", stream_format="sse"
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line[6:]) for line in raw.http_response.text.split("\n") if line.startswith("data: ")
    ]
    assert events[-1]["type"] == "speech.audio.done"
    assert Decimal(raw.headers["x-credits-used"]) == 9 * Decimal(12) / MILLION


def test_speech_is_checked_before_any_provider(audio: openai.OpenAI, openai_sim: SimulatorProcess):
    openai_sim.clear()
    with pytest.raises(openai.BadRequestError) as err:
        audio.audio.speech.create(model="speak", voice="alloy", input="x" * 4097)
    assert err.value.code == "string_above_max_length" and err.value.param == "input"
    assert openai_sim.requests() == []


# -- transcriptions -------------------------------------------------------------------------


def test_transcription_in_json_text_and_verbose_json_openai(audio: openai.OpenAI, admin: Admin, openai_sim):
    wav = audio_samples.wav(1.5)
    raw = audio.audio.transcriptions.with_raw_response.create(model="hear", file=("talk.wav", wav))
    doc = json.loads(raw.http_response.content)
    assert_openai(doc, "CreateTranscriptionResponseJson")
    assert doc["text"] == "This is a simulated transcript of 1.50 seconds of audio."
    # whisper's duration usage is in whole seconds (rounded up): that is what is charged
    assert doc["usage"] == {"type": "duration", "seconds": 2}
    assert Decimal(raw.headers["x-credits-used"]) == 2 * PER_SECOND
    sent = openai_sim.requests()[-1]
    assert sent["path"] == "/v1/audio/transcriptions" and sent["body"]["form"]["model"] == "whisper-1"
    assert sent["body"]["files"]["file"]["size"] == len(wav)
    record = record_of(admin, raw.headers)
    assert (record["endpoint"], record["audio_ms"], record["model_used"]) == (
        "/v1/audio/transcriptions",
        2000,
        "hear",
    )

    # text: no usage in the answer, so the gateway's own measure of the WAV counts, exactly
    raw = audio.audio.transcriptions.with_raw_response.create(
        model="hear", file=("talk.wav", wav), response_format="text"
    )
    assert raw.http_response.text == "This is a simulated transcript of 1.50 seconds of audio.\n"
    assert raw.headers["content-type"].startswith("text/plain")
    assert Decimal(raw.headers["x-credits-used"]) == Decimal("1.5") * PER_SECOND
    assert record_of(admin, raw.headers)["audio_ms"] == 1500

    raw = audio.audio.transcriptions.with_raw_response.create(
        model="hear",
        file=("talk.wav", wav),
        response_format="verbose_json",
        timestamp_granularities=["segment"],
    )
    verbose = json.loads(raw.http_response.content)
    assert_openai(verbose, "CreateTranscriptionResponseVerboseJson")
    assert verbose["duration"] == 1.5 and verbose["segments"]
    assert Decimal(raw.headers["x-credits-used"]) == 2 * PER_SECOND


def test_transcription_in_json_text_and_verbose_json_gemini(audio: openai.OpenAI, admin: Admin, gemini_sim):
    wav = audio_samples.wav(1.5)
    # Gemini counts 32 tokens a second of audio: 48 tokens, 1.5 s
    per_call = Decimal("1.5") * GEMINI_PER_SECOND
    raw = audio.audio.transcriptions.with_raw_response.create(model="hear-gemini", file=("talk.wav", wav))
    doc = json.loads(raw.http_response.content)
    assert_openai(doc, "CreateTranscriptionResponseJson")
    assert doc["text"] == "This is a simulated transcript of 1.50 seconds of audio."
    assert Decimal(raw.headers["x-credits-used"]) == per_call
    sent = gemini_sim.requests()[-1]
    assert sent["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    inline = sent["body"]["contents"][0]["parts"][0]["inlineData"]
    assert inline["mimeType"] == "audio/wav"
    assert base64.b64decode(inline["data"]) == wav  # every byte, re-encoded as it passed
    record = record_of(admin, raw.headers)
    assert (record["provider"], record["audio_ms"]) == ("sim-google", 1500)

    text = audio.audio.transcriptions.with_raw_response.create(
        model="hear-gemini", file=("talk.wav", wav), response_format="text"
    )
    assert text.http_response.text == "This is a simulated transcript of 1.50 seconds of audio.\n"
    assert text.headers["content-type"].startswith("text/plain")
    assert Decimal(text.headers["x-credits-used"]) == per_call

    verbose = audio.audio.transcriptions.create(
        model="hear-gemini", file=("talk.wav", wav), response_format="verbose_json"
    )
    assert_openai(verbose.model_dump(exclude_none=True), "CreateTranscriptionResponseVerboseJson")
    assert verbose.duration == 1.5 and verbose.language == "english" and verbose.segments

    srt = audio.audio.transcriptions.create(
        model="hear-gemini", file=("talk.wav", wav), response_format="srt"
    )
    assert srt.startswith("1\n00:00:00,000 --> ")


def test_a_translation(audio: openai.OpenAI, admin: Admin):
    wav = audio_samples.wav(0.5, rate=8000)
    raw = audio.audio.translations.with_raw_response.create(model="hear", file=("talk.wav", wav))
    assert json.loads(raw.http_response.content) == {
        "text": "This is a simulated English translation of 0.50 seconds of audio."
    }
    # a translation answer has no usage: the gateway's measure of the WAV is charged
    assert Decimal(raw.headers["x-credits-used"]) == Decimal("0.5") * PER_SECOND
    record = record_of(admin, raw.headers)
    assert (record["endpoint"], record["audio_ms"]) == ("/v1/audio/translations", 500)
    gemini = audio.audio.translations.create(model="hear-gemini", file=("talk.wav", wav))
    assert gemini.text == "This is a simulated English translation of 0.50 seconds of audio."


def test_an_upload_larger_than_the_gateways_body_buffer_streams(audio: openai.OpenAI):
    big = audio_samples.wav(100.0, rate=16000)  # 3.2 MB, over the test gateway's 1 MiB buffer
    assert len(big) > 3 * MAX_REQUEST_BYTES
    raw = audio.audio.transcriptions.with_raw_response.create(
        model="hear", file=("long.wav", big), response_format="text"
    )
    assert raw.http_response.text == "This is a simulated transcript of 100.00 seconds of audio.\n"
    assert Decimal(raw.headers["x-credits-used"]) == 100 * PER_SECOND
    gemini = audio.audio.transcriptions.create(model="hear-gemini", file=("long.wav", big))
    assert gemini.text == "This is a simulated transcript of 100.00 seconds of audio."
    # A chain's request is kept by Envoy for its retries, within INFERY_MAX_REQUEST_BYTES (32 MiB by
    # default, above INFERY_MAX_AUDIO_BYTES): an upload announcing more is refused before anything
    # goes upstream (Envoy 1.40 crashed when such an upload was cut mid-way), and the gateway serves on.
    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as err:
            audio.audio.transcriptions.create(model="hear-chain", file=("long.wav", big))
        assert (err.value.status_code, err.value.code) == (413, "request_too_large")
    small = audio.audio.transcriptions.create(model="hear-chain", file=("short.wav", audio_samples.wav(0.5)))
    assert small.text == "This is a simulated transcript of 0.50 seconds of audio."


def test_the_model_after_the_file_still_routes(
    audio: openai.OpenAI, gateway: Stack, tenant: Tenant, openai_sim
):
    content_type, body = audio_samples.form(
        {"model": "hear", "response_format": "json"}, audio_samples.wav(0.25), file_first=True
    )
    assert body.index(b'name="file"') < body.index(b'name="model"')
    response = httpx.post(
        f"{gateway.base_url}/audio/transcriptions",
        content=body,
        headers={"content-type": content_type, "authorization": f"Bearer {tenant.key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["text"] == "This is a simulated transcript of 0.25 seconds of audio."
    assert openai_sim.requests()[-1]["body"]["form"]["model"] == "whisper-1"


def test_an_upload_without_content_length(audio: openai.OpenAI, gateway: Stack, tenant: Tenant, openai_sim):
    content_type, body = audio_samples.form({"model": "hear-chain"}, audio_samples.wav(0.5))

    def pieces() -> Any:
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    headers = {"content-type": content_type, "authorization": f"Bearer {tenant.key}"}
    # chunked: a chain's retries need the size up front, so its first target serves it alone
    openai_sim.script([{"status": 503}])
    failed = httpx.post(
        f"{gateway.base_url}/audio/transcriptions", content=pieces(), headers=headers, timeout=30
    )
    assert failed.status_code == 503 and "x-fallback-from" not in failed.headers
    served = httpx.post(
        f"{gateway.base_url}/audio/transcriptions", content=pieces(), headers=headers, timeout=30
    )
    assert served.status_code == 200, served.text
    assert served.json()["text"] == "This is a simulated transcript of 0.50 seconds of audio."
    assert served.headers["x-model-used"] == "hear-chain"


@pytest.mark.parametrize("model", ["hear-4o", "hear-gemini"])
def test_a_transcription_stream(audio: openai.OpenAI, admin: Admin, model: str):
    wav = audio_samples.wav(1.0)
    stream = audio.audio.transcriptions.with_raw_response.create(
        model=model, file=("a.wav", wav), stream=True
    )
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = list(stream.parse())
    for event in events:
        assert_openai(event.model_dump(exclude_none=True), "CreateTranscriptionResponseStreamEvent")
    assert events[-1].type == "transcript.text.done"
    assert "".join(e.delta for e in events[:-1]) == events[-1].text
    assert events[-1].text == "This is a simulated transcript of 1.00 seconds of audio."
    # gpt-4o-transcribe's stream reports tokens, Gemini's audio tokens: one second either way
    price = PER_SECOND if model == "hear-4o" else GEMINI_PER_SECOND
    assert Decimal(stream.headers["x-credits-used"]) == price
    record = record_of(admin, stream.headers)
    assert (record["stream"], record["audio_ms"]) == (True, 1000)


def test_a_fallback_chain_serves_a_transcription(audio: openai.OpenAI, admin: Admin, openai_sim, gemini_sim):
    wav = audio_samples.wav(2.0)
    openai_sim.script([{"status": 503}])
    raw = audio.audio.transcriptions.with_raw_response.create(model="hear-chain", file=("a.wav", wav))
    assert raw.headers["x-model-used"] == "hear-gemini" and raw.headers["x-fallback-from"] == "hear-chain"
    assert (
        json.loads(raw.http_response.content)["text"]
        == "This is a simulated transcript of 2.00 seconds of audio."
    )
    assert Decimal(raw.headers["x-credits-used"]) == 2 * GEMINI_PER_SECOND
    inline = gemini_sim.requests()[-1]["body"]["contents"][0]["parts"][0]["inlineData"]
    assert base64.b64decode(inline["data"]) == wav  # the attempt wrote Gemini's body from the form
    record = record_of(admin, raw.headers)
    assert (record["fallback_from"], record["model_used"], record["audio_ms"]) == (
        "hear-chain",
        "hear-gemini",
        2000,
    )
    # without a failure the primary serves, with its own model name in the form
    raw = audio.audio.transcriptions.with_raw_response.create(model="hear-chain", file=("a.wav", wav))
    assert raw.headers["x-model-used"] == "hear-chain" and "x-fallback-from" not in raw.headers
    assert openai_sim.requests()[-1]["body"]["form"]["model"] == "whisper-1"


# -- what cannot be served ------------------------------------------------------------------


def test_an_endpoint_the_provider_lacks_is_400_unsupported_endpoint(audio: openai.OpenAI, claude_sim):
    claude_sim.clear()
    with pytest.raises(openai.BadRequestError) as err:
        audio.audio.speech.create(model="claude-sonnet-4-5", voice="alloy", input="Hello")
    assert err.value.code == "unsupported_endpoint" and err.value.param == "model"
    assert "/v1/audio/speech" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        audio.audio.speech.create(model="hear-gemini", voice="alloy", input="Hello")
    assert err.value.code == "unsupported_endpoint"
    with pytest.raises(openai.BadRequestError) as err:
        audio.audio.transcriptions.create(model="claude-sonnet-4-5", file=("a.wav", audio_samples.wav(0.1)))
    assert err.value.code == "unsupported_endpoint" and "/v1/audio/transcriptions" in err.value.message
    assert claude_sim.requests() == []


def test_bad_uploads_are_the_clients_400(audio: openai.OpenAI, gateway: Stack, tenant: Tenant):
    auth = {"authorization": f"Bearer {tenant.key}"}
    url = f"{gateway.base_url}/audio/transcriptions"
    not_a_form = httpx.post(url, json={"model": "hear"}, headers=auth, timeout=30)
    assert not_a_form.status_code == 400 and not_a_form.json()["error"]["code"] == "invalid_request"
    no_file = httpx.post(url, data={"model": "hear"}, files={"x": ("x.txt", b"hi")}, headers=auth, timeout=30)
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    with pytest.raises(openai.NotFoundError):
        audio.audio.transcriptions.create(model="no-such-model", file=("a.wav", audio_samples.wav(0.1)))
    with pytest.raises(openai.BadRequestError) as err:
        audio.audio.transcriptions.create(model="hear", file=("a.wav", audio_samples.wav(0.1)), temperature=3)
    assert err.value.param == "temperature"
