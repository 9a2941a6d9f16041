"""The Gemini simulator speaks the v1beta REST wire format and rejects what Gemini rejects."""

from __future__ import annotations

import orjson
import pytest
from sim_checks import KEYS, Checks, post, sse_data

import simulators
from simulators.testing import SimulatorProcess

MODEL = "/v1beta/models/gemini-2.5-flash"
BODY = {
    "contents": [{"role": "user", "parts": [{"text": "Tell me something nice"}]}],
    "systemInstruction": {"parts": [{"text": "Be brief."}]},
}
TOOLS = [
    {
        "functionDeclarations": [
            {
                "name": "get_weather",
                "parameters": {
                    "type": "OBJECT",
                    "properties": {"city": {"type": "STRING"}},
                    "required": ["city"],
                },
            },
            {
                "name": "get_time",
                "parametersJsonSchema": {
                    "type": "object",
                    "properties": {"zone": {"type": "string"}},
                    "required": ["zone"],
                },
            },
        ]
    }
]


def _generate(sim: SimulatorProcess, checks: Checks, **extra: object) -> dict:
    body = {**BODY, **extra}
    response = post(sim, f"{MODEL}:generateContent", body)
    assert response.status_code == 200, response.text
    checks.provider("gemini-response", response.content)
    doc = response.json()
    assert doc["usageMetadata"] == simulators.expected_usage("google", body)
    return doc


def test_generate_content(google_sim, checks):
    doc = _generate(google_sim, checks)
    (candidate,) = doc["candidates"]
    assert candidate["content"] == {
        "role": "model",
        "parts": [{"text": "Hello! You said: Tell me something nice."}],
    }
    assert candidate["finishReason"] == "STOP" and doc["modelVersion"] == "gemini-2.5-flash"
    usage = doc["usageMetadata"]
    assert (usage["promptTokenCount"], usage["candidatesTokenCount"]) == ((2 + 3) + (4 + 3), 7)
    assert usage["totalTokenCount"] == 19


def test_stream_sse(google_sim, checks):
    response = post(google_sim, f"{MODEL}:streamGenerateContent?alt=sse", BODY)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.endswith("\r\n\r\n") and "[DONE]" not in response.text
    checks.provider("gemini-sse", response.text)
    chunks = [orjson.loads(d) for d in sse_data(response.text)]
    assert len(chunks) >= 6
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == "Hello! You said: Tell me something nice."
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"] == simulators.expected_usage("google", BODY)
    assert all(c["usageMetadata"]["promptTokenCount"] == 12 for c in chunks)


def test_stream_without_sse_is_a_json_array(google_sim):
    response = post(google_sim, f"{MODEL}:streamGenerateContent", BODY)
    assert response.headers["content-type"].startswith("application/json")
    chunks = response.json()
    assert isinstance(chunks, list) and len(chunks) >= 6
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"


def test_key_in_query_and_v1_paths(google_sim, checks):
    response = post(google_sim, f"{MODEL}:generateContent?key={KEYS['google']}", BODY, auth=False)
    assert response.status_code == 200
    v1_body = {"contents": BODY["contents"]}  # v1 has no systemInstruction in the kit's protos
    response = post(google_sim, "/v1/models/gemini-2.5-flash:generateContent", v1_body)
    assert response.status_code == 200, response.text
    checks.provider("gemini-response", response.content)


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [({}, 403, "PERMISSION_DENIED"), ({"x-goog-api-key": "AIza-wrong"}, 400, "INVALID_ARGUMENT")],
)
def test_bad_and_missing_key(google_sim, checks, headers, status, code):
    response = post(google_sim, f"{MODEL}:generateContent", BODY, headers, auth=False)
    assert response.status_code == status
    checks.provider("gemini-response", response.content)
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (status, code)
    if status == 400:
        assert error["details"][0]["reason"] == "API_KEY_INVALID"


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        ({"generationConfig": {"max_tokens": 5}}, "max_tokens"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "hi"}]}]}, "role"),
        ({"contents": [{"role": "user", "parts": []}]}, "empty parts"),
        ({"messages": []}, "messages"),
    ],
)
def test_invalid_bodies_are_rejected(google_sim, checks, change, mentions):
    response = post(google_sim, f"{MODEL}:generateContent", {**BODY, **change})
    assert response.status_code == 400, response.text
    checks.provider("gemini-response", response.content)
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and mentions in error["message"], error


def test_function_calling_modes(google_sim, checks):
    forced = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}}
    doc = _generate(google_sim, checks, tools=TOOLS, toolConfig=forced)
    assert doc["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"name": "get_time", "args": {"zone": "x"}}}
    ]
    weather = {"contents": [{"role": "user", "parts": [{"text": "weather in Paris"}]}]}
    doc = _generate(google_sim, checks, **weather, tools=TOOLS)
    assert doc["candidates"][0]["content"]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"city": "x"}}}
    ]
    off = {"functionCallingConfig": {"mode": "NONE"}}
    doc = _generate(google_sim, checks, **weather, tools=TOOLS, toolConfig=off)
    assert "text" in doc["candidates"][0]["content"]["parts"][0]


def test_function_response_is_quoted(google_sim, checks):
    contents = [
        {"role": "user", "parts": [{"text": "weather in Paris?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": "18C"}}}],
        },
    ]
    doc = _generate(google_sim, checks, contents=contents, tools=TOOLS)
    assert doc["candidates"][0]["content"]["parts"] == [{"text": 'The tool returned: {"temp":"18C"}'}]


def test_json_mode_and_media(google_sim, checks):
    schema = {"type": "OBJECT", "properties": {"ok": {"type": "BOOLEAN"}}, "required": ["ok"]}
    config = {"responseMimeType": "application/json", "responseSchema": schema}
    doc = _generate(google_sim, checks, generationConfig=config)
    assert orjson.loads(doc["candidates"][0]["content"]["parts"][0]["text"]) == {"ok": True}
    parts = [
        {"text": "look"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
    ]
    doc = _generate(google_sim, checks, contents=[{"role": "user", "parts": parts}])
    assert doc["candidates"][0]["content"]["parts"][0]["text"] == (
        "Hello! You said: look. I saw 1 image(s). I saw 1 document(s)."
    )


def test_cached_content_and_max_tokens(google_sim, checks):
    doc = _generate(google_sim, checks, cachedContent="cachedContents/abc")
    assert doc["usageMetadata"]["cachedContentTokenCount"] == 6
    doc = _generate(google_sim, checks, generationConfig={"maxOutputTokens": 2, "candidateCount": 2})
    assert [c["finishReason"] for c in doc["candidates"]] == ["MAX_TOKENS"] * 2
    assert doc["usageMetadata"]["candidatesTokenCount"] == 4


def test_embeddings(google_sim):
    content = {"parts": [{"text": "hello world"}]}
    one = post(
        google_sim,
        "/v1beta/models/text-embedding-004:embedContent",
        {"content": content, "outputDimensionality": 8},
    ).json()
    assert len(one["embedding"]["values"]) == 8
    batch = post(
        google_sim,
        "/v1beta/models/text-embedding-004:batchEmbedContents",
        {
            "requests": [
                {"model": "models/text-embedding-004", "content": content, "outputDimensionality": 8},
                {"model": "models/text-embedding-004", "content": {"parts": [{"text": "other"}]}},
            ]
        },
    ).json()
    assert batch["embeddings"][0] == one["embedding"]
    assert len(batch["embeddings"][1]["values"]) == 768
    mismatch = post(
        google_sim,
        "/v1beta/models/text-embedding-004:batchEmbedContents",
        {"requests": [{"model": "models/other", "content": content}]},
    )
    assert mismatch.status_code == 400 and mismatch.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_count_tokens(google_sim):
    response = post(google_sim, f"{MODEL}:countTokens", {"contents": BODY["contents"]})
    assert response.json()["totalTokens"] == 7
