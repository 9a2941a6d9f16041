"""Gemini's wire format, checked with Google's own protos (google-ai-generativelanguage).

Bodies are parsed with protobuf's ``json_format.ParseDict(ignore_unknown_fields=False)``: unknown
fields, wrong types and bad enum names are rejected, camelCase and snake_case both accepted, as
the REST API does. Every check returns a list of problems; empty means valid.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

from simulators.conformance.sse import iter_sse


def _glm(api: str) -> ModuleType:
    if api == "v1":
        import google.ai.generativelanguage_v1 as v1

        return v1
    import google.ai.generativelanguage_v1beta as v1beta

    return v1beta


def message_problems(message: str, body: Any, *, api: str = "v1beta") -> list[str]:
    """``body`` parsed as the proto ``message`` (e.g. EmbedContentRequest) of ``api``."""
    from google.protobuf import json_format

    try:
        json_format.ParseDict(body, getattr(_glm(api), message).pb()(), ignore_unknown_fields=False)
    except (json_format.ParseError, TypeError, ValueError, AttributeError) as e:
        # protobuf raises the plain errors (not ParseError) for shapes like {"candidates": 3}
        return [f"{message}({api}): {(str(e).splitlines() or [type(e).__name__])[0][:400]}"]
    return []


def request_problems(body: Any, *, api: str = "v1beta") -> list[str]:
    """A generateContent request: the proto, plus roles and parts the API refuses."""
    problems = message_problems("GenerateContentRequest", body, api=api)
    contents = body.get("contents") if isinstance(body, dict) else None
    for i, content in enumerate(contents or []):
        if not isinstance(content, dict):
            continue
        if content.get("role") not in (None, "user", "model"):
            problems.append(
                f"contents/{i}/role: {content.get('role')!r} (Gemini accepts 'user' or 'model'; "
                "system goes to systemInstruction)"
            )
        if not content.get("parts"):
            problems.append(f"contents/{i}/parts: empty parts are rejected by the API")
    return problems


def _role_problems(doc: dict[str, Any], where: str) -> list[str]:
    problems = []
    candidates = doc.get("candidates")
    for j, candidate in enumerate(candidates if isinstance(candidates, list) else []):
        if not isinstance(candidate, dict):
            continue
        role = (candidate.get("content") or {}).get("role")
        if role not in (None, "model"):
            problems.append(f"{where}/candidates/{j}/content/role: {role!r} (Gemini responses use 'model')")
    return problems


def response_problems(doc: Any, *, api: str = "v1beta") -> list[str]:
    """A GenerateContentResponse, or Google's error envelope."""
    if isinstance(doc, dict) and "error" in doc:
        error = doc["error"] if isinstance(doc["error"], dict) else {}
        return [
            f"error/{key}: missing or not {kind.__name__}"
            for key, kind in (("code", int), ("message", str), ("status", str))
            if not isinstance(error.get(key), kind)
        ]
    return message_problems("GenerateContentResponse", doc, api=api) + _role_problems(doc, "response")


def sse_problems(text: str, *, api: str = "v1beta") -> list[str]:
    """A streamGenerateContent?alt=sse stream: every chunk a response (or a final error), no [DONE]."""
    problems: list[str] = []
    count = 0
    for i, (_, data) in enumerate(iter_sse(text)):
        where = f"chunk {i}"
        if data.strip() == "[DONE]":
            problems.append(f"{where}: Gemini streams have no [DONE] sentinel")
            continue
        try:
            chunk = json.loads(data)
        except ValueError as e:
            problems.append(f"{where}: not JSON: {e}")
            continue
        count += 1
        if isinstance(chunk, dict) and "error" in chunk:
            continue
        problems += [f"{where}: {p}" for p in message_problems("GenerateContentResponse", chunk, api=api)]
        if isinstance(chunk, dict):
            problems += _role_problems(chunk, where)
            if not any(key in chunk for key in ("candidates", "promptFeedback", "usageMetadata")):
                problems.append(f"{where}: chunk has none of candidates/promptFeedback/usageMetadata")
    if count == 0:
        problems.append("no data chunks")
    return problems
