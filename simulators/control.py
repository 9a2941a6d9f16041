"""Test control state: the FIFO of scripted steps and the log of received API requests.

Not part of any provider API; served under ``/_sim/`` (see `server.py`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACTIONS = ("reset", "hang", "cut_stream", "replay", "no_usage", "endless_event", "no_body")
STEP_KEYS = frozenset(
    {
        "status",
        "body",
        "headers",
        "action",
        "seconds",
        "after_chunks",
        "fixture",
        "index",
        "chunk_delay_ms",
        "usage",
        "size",
        "answer_bytes",
    }
)


class StepError(ValueError):
    """A malformed step: reported to the test at scripting time, not at request time."""


@dataclass(frozen=True)
class Step:
    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    action: str | None = None
    seconds: float = 0.0
    after_chunks: int = 0
    fixture: Path | None = None
    index: int = 0
    chunk_delay_ms: float | None = None
    usage: dict[str, Any] | None = None
    size: int = 16 * 1024 * 1024  # endless_event: bytes of the event that never ends
    answer_bytes: int = 0  # OpenAI chat: the answer's text grown to this many bytes (content.lengthened)

    @property
    def answers_instead(self) -> bool:
        """True when the step replaces the normal answer by a status/body of its own."""
        return self.status is not None and (self.status >= 400 or self.body is not None)

    @classmethod
    def parse(cls, raw: Any, fixtures: Path | None) -> Step:
        if not isinstance(raw, dict):
            raise StepError(f"a step must be an object, got {raw!r}")
        unknown = set(raw) - STEP_KEYS
        if unknown:
            raise StepError(f"unknown step keys {sorted(unknown)}; known: {sorted(STEP_KEYS)}")
        action = raw.get("action")
        if action is not None and action not in ACTIONS:
            raise StepError(f"unknown action {action!r}; known: {ACTIONS}")
        status = raw.get("status")
        if status is not None and not (isinstance(status, int) and 100 <= status <= 599):
            raise StepError(f"status must be an HTTP status code, got {status!r}")
        headers = raw.get("headers") or {}
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise StepError("headers must map names to string values")
        usage = raw.get("usage")
        if usage is not None and not isinstance(usage, dict):
            raise StepError("usage must be an object in the provider's own field names")
        fixture = None
        if action == "replay":
            fixture = _fixture_path(raw.get("fixture"), fixtures)
        return cls(
            status=status,
            body=raw.get("body"),
            headers={k.lower(): v for k, v in headers.items()},
            action=action,
            seconds=float(raw.get("seconds", 0.0)),
            after_chunks=int(raw.get("after_chunks", 0)),
            fixture=fixture,
            index=int(raw.get("index", 0)),
            chunk_delay_ms=None if raw.get("chunk_delay_ms") is None else float(raw["chunk_delay_ms"]),
            usage=usage,
            size=int(raw.get("size", 16 * 1024 * 1024)),
            answer_bytes=int(raw.get("answer_bytes", 0)),
        )


def _fixture_path(name: Any, fixtures: Path | None) -> Path:
    if fixtures is None:
        raise StepError("replay needs the conformance kit's fixtures directory, which was not found")
    if not isinstance(name, str) or "/" in name or name.startswith("."):
        raise StepError(f"fixture must be a file name in {fixtures}, got {name!r}")
    path = fixtures / name
    if not path.is_file():
        raise StepError(f"no fixture {name!r} in {fixtures}")
    return path


class Script:
    """Steps consumed one per API request, in order; empty means normal behaviour."""

    def __init__(self) -> None:
        self._steps: deque[Step] = deque()

    def extend(self, steps: list[Step]) -> None:
        self._steps.extend(steps)

    def pop(self) -> Step | None:
        return self._steps.popleft() if self._steps else None

    def clear(self) -> None:
        self._steps.clear()

    def __len__(self) -> int:
        return len(self._steps)


class RequestLog:
    """The last API requests, at most ``limit`` of them and ``max_bytes`` of their bodies, so a
    benchmark run cannot exhaust memory: a count alone let 5,000 prompts of 8 MB each be kept (the
    bench's simulator reached 2 GB). The newest request stays whatever its size."""

    def __init__(self, limit: int = 5000, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._entries: deque[tuple[dict[str, Any], int]] = deque()
        self._limit = limit
        self._max_bytes = max_bytes
        self._bytes = 0

    def add(self, entry: dict[str, Any], size: int) -> None:
        """Log ``entry``, whose body took ``size`` bytes on the wire."""
        self._entries.append((entry, size))
        self._bytes += size
        while len(self._entries) > 1 and (len(self._entries) > self._limit or self._bytes > self._max_bytes):
            self._bytes -= self._entries.popleft()[1]

    def entries(self) -> list[dict[str, Any]]:
        return [entry for entry, _ in self._entries]

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
