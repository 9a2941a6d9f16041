"""Helpers shared by the control-plane tests (a unique module name: tests/ is not a package)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from infery_proto.v1 import usage_pb2
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session

from control_plane.resources import usage

ADMIN_TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
OPENAI = {"name": "openai", "kind": "openai", "base_url": "https://api.openai.com/v1", "api_key": "sk-secret"}


def assert_error(response: Any, status: int, code: str, param: str | None = None) -> dict[str, Any]:
    """The answer is OpenAI's error envelope with this status, code and (if given) param."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "code", "message", "param"}
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return dict(error)


def add_provider(client: TestClient, **overrides: Any) -> dict[str, Any]:
    response = client.post("/admin/v1/providers", json=OPENAI | overrides)
    assert response.status_code == 201, response.text
    return dict(response.json())


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp() * 1000)


def record(request_id: str, **fields: Any) -> usage_pb2.UsageRecord:
    defaults: dict[str, Any] = {
        "started_at_ms": ms("2025-03-01T10:00:00"),
        "workspace_id": "ws-1",
        "member_id": "m-1",
        "key_id": "k-1",
        "endpoint": "/v1/chat/completions",
        "model_requested": "gpt-4o",
        "model_used": "gpt-4o",
        "provider": "openai",
        "status": 200,
        "input_tokens": 100,
        "cached_input_tokens": 20,
        "output_tokens": 50,
        "credits": "0.000375",
        "latency_ms": 12.5,
    }
    return usage_pb2.UsageRecord(request_id=request_id, **(defaults | fields))


def store(session_factory: sessionmaker[Session], records: list[usage_pb2.UsageRecord]) -> tuple[int, int]:
    with session_factory() as session:
        result = usage.store(session, records)
        session.commit()
    return result


# Three records whose credits would drift in binary floating point (0.1 + 0.2 != 0.3).
THREE = [
    record("r1", credits="0.1", key_id="k-1"),
    record("r2", credits="0.2", key_id="k-1", input_tokens=7, cached_input_tokens=0, output_tokens=3),
    record(
        "r3",
        credits="0.000000000001",
        key_id="k-2",
        member_id="m-2",
        model_used="claude-sonnet-4-5",
        fallback_from="gpt-4o",
        started_at_ms=ms("2025-03-02T23:59:59"),
    ),
]
