"""An input file, checked line by line before any line is sent (the batch's ``validating`` phase).

Each line must be a JSON object with a non-empty ``custom_id`` unique in the file,
``method: "POST"``, the batch's endpoint as ``url`` and a ``body`` for that endpoint (an
object with a ``model`` and what the endpoint cannot do without; not streamed). Any
problem fails the whole batch with OpenAI's ``errors`` list (code, message, param, line
number), before anything is sent or charged. The request's finer points are the data
plane's to check when the line is sent (the same checks as a live request's): its
refusal is the line's answer, in the error file.

A line whose model the workspace may not use is kept, already failed: it goes to the
error file (``model_not_allowed``) and is never sent.

The file is read as it streams from storage, one line at a time: memory holds one line
(at most ``MAX_LINE_BYTES``) and the set of ``custom_id`` seen, never the file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from control_plane.batches.lines import NewLine

MAX_LINES = 50_000  # OpenAI's limit for one batch
MAX_LINE_BYTES = 32 * 1024 * 1024  # a line is one request: the data plane buffers no more
MAX_ERRORS = 100  # reported in the batch's errors list; the rest are not listed

# What each endpoint's body cannot be without (the data plane checks the rest as for any request).
REQUIRED_FIELDS = {
    "/v1/chat/completions": "messages",
    "/v1/embeddings": "input",
    "/v1/responses": "input",
    "/v1/completions": "prompt",
}


@dataclass(frozen=True, slots=True)
class LineError:
    code: str
    message: str
    line: int | None
    param: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass
class LineChecker:
    """Checks one file's lines in order; ``allowed_models`` None = every model."""

    endpoint: str
    allowed_models: frozenset[str] | None
    seen: set[str] = field(default_factory=set)

    def check(self, line_no: int, raw: bytes) -> NewLine | LineError:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return LineError("invalid_json_line", "This line is not valid JSON.", line_no)
        if not isinstance(doc, dict):
            return LineError("invalid_json_line", "Each line must be a JSON object.", line_no)
        custom_id = doc.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            return LineError(
                "missing_custom_id", "'custom_id' must be a non-empty string.", line_no, "custom_id"
            )
        if custom_id in self.seen:
            return LineError(
                "duplicate_custom_id", f"The custom_id '{custom_id}' is used twice.", line_no, "custom_id"
            )
        self.seen.add(custom_id)
        if doc.get("method") != "POST":
            return LineError("invalid_method", "'method' must be 'POST'.", line_no, "method")
        if doc.get("url") != self.endpoint:
            return LineError(
                "mismatched_endpoint", f"'url' must be the batch's endpoint, {self.endpoint}.", line_no, "url"
            )
        body = doc.get("body")
        problem = self._body_problem(body)
        if problem is not None:
            return LineError("invalid_body", problem[0], line_no, problem[1])
        assert isinstance(body, dict)
        model = body["model"]
        error = None
        if self.allowed_models is not None and model not in self.allowed_models:
            error = {
                "code": "model_not_allowed",
                "message": f"This workspace may not use the model '{model}'.",
            }
        return NewLine(line_no, custom_id, orjson.dumps(body), error)

    def _body_problem(self, body: Any) -> tuple[str, str] | None:
        if not isinstance(body, dict):
            return "'body' must be a JSON object: the request for the endpoint.", "body"
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "'body.model' is required.", "body.model"
        needed = REQUIRED_FIELDS[self.endpoint]
        if body.get(needed) in (None, "", []):
            return f"'body.{needed}' is required for {self.endpoint}.", f"body.{needed}"
        if body.get("stream") is True:
            return "Batch requests are not streamed: 'body.stream' must not be true.", "body.stream"
        return None


async def numbered_lines(pieces: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes | None]]:
    """The file's lines, numbered from 1, without their line ends; blank lines skipped. A line
    longer than ``MAX_LINE_BYTES`` comes as ``None`` (its bytes are dropped as they pass)."""
    held = bytearray()
    line_no = 1
    too_long = False
    async for piece in pieces:
        start = 0
        while True:
            end = piece.find(b"\n", start)
            if end < 0:
                if not too_long:
                    held += piece[start:]
                    if len(held) > MAX_LINE_BYTES:
                        too_long, held = True, bytearray()
                break
            if not too_long:
                held += piece[start:end]
            line = None if too_long or len(held) > MAX_LINE_BYTES else bytes(held).rstrip(b"\r")
            if line is None or line.strip():
                yield line_no, line
            line_no += 1
            held, too_long, start = bytearray(), False, end + 1
    if too_long:
        yield line_no, None
    elif bytes(held).strip():
        yield line_no, bytes(held).rstrip(b"\r")
