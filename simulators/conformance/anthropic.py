"""Anthropic's wire format, checked with Anthropic's own types.

Requests: JSON Schemas generated from anthropic-sdk-python's ``MessageCreateParams`` TypedDicts
with every object closed (the API rejects unknown keys), vendored in ``data/``. Responses and
stream events: the SDK's pydantic models, plus the event-order rules the models cannot express.
Every check returns a list of problems; empty means valid.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from typing import Any

from jsonschema import Draft202012Validator

from simulators.conformance.paths import anthropic_request_schema
from simulators.conformance.sse import iter_sse

# anthropic>=1.0 dropped these from the SDK's signatures; the API still takes them on models that sample.
SAMPLING = {
    "temperature": {"type": "number", "minimum": 0, "maximum": 1},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "top_k": {"type": "integer", "minimum": 0},
}
EVENT_MODELS = {
    "message_start": "RawMessageStartEvent",
    "message_delta": "RawMessageDeltaEvent",
    "message_stop": "RawMessageStopEvent",
    "content_block_start": "RawContentBlockStartEvent",
    "content_block_delta": "RawContentBlockDeltaEvent",
    "content_block_stop": "RawContentBlockStopEvent",
}
DELTAS_FOR_BLOCK = {
    "text": {"text_delta", "citations_delta"},
    "tool_use": {"input_json_delta"},
    "server_tool_use": {"input_json_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
}


@functools.cache
def _request_schema(beta: bool) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(anthropic_request_schema(beta).read_bytes())
    for definition in schema["$defs"].values():
        props = definition.get("properties", {})
        if definition.get("title", "").startswith(("MessageCreateParams", "BetaMessageCreateParams")) or (
            "messages" in props and "max_tokens" in props
        ):
            definition.setdefault("properties", {}).update(
                {k: v for k, v in SAMPLING.items() if k not in definition["properties"]}
            )
    return schema


@functools.cache
def _request_validators(beta: bool, stream: bool) -> tuple[Draft202012Validator, Draft202012Validator]:
    """(the whole request schema, its streaming or non-streaming branch alone, for clear messages)."""
    schema = _request_schema(beta)
    suffix = "MessageCreateParamsStreaming" if stream else "MessageCreateParamsNonStreaming"
    branch_name = next(name for name in schema["$defs"] if name.endswith(suffix))
    branch = {k: v for k, v in schema.items() if k != "anyOf"} | {"$ref": f"#/$defs/{branch_name}"}
    return Draft202012Validator(schema), Draft202012Validator(branch)


def _deepest(error: Any) -> Any:
    """In anyOf/oneOf failures, the branch that got furthest (no tag or root-type mismatch, deepest
    error, fewest errors), then its deepest error; repeated down to a leaf."""
    while error.context:
        branches: dict[Any, list[Any]] = {}
        for child in error.context:
            branches.setdefault(child.schema_path[0] if child.schema_path else 0, []).append(child)

        def score(errors: Iterable[Any]) -> tuple[bool, bool, int, int]:
            errors = list(errors)
            tag = any(
                c.validator in ("const", "enum")
                and len(c.relative_path) == 1
                and c.relative_path[0] in ("type", "role")
                for c in errors
            )
            root_type = any(c.validator == "type" and not c.relative_path for c in errors)
            return (not tag, not root_type, max(len(c.relative_path) for c in errors), -len(errors))

        error = max(max(branches.values(), key=score), key=lambda c: len(c.relative_path))
    return error


def request_problems(body: Any, *, beta: bool = False) -> list[str]:
    """What the Messages API would reject in ``body`` (a parsed JSON request)."""
    stream = isinstance(body, dict) and bool(body.get("stream"))
    whole, branch = _request_validators(beta, stream)
    problems = []
    if any(True for _ in whole.iter_errors(body)):
        for error in sorted(branch.iter_errors(body), key=lambda e: list(e.absolute_path))[:20]:
            leaf = _deepest(error)
            problems.append(f"{'/'.join(map(str, leaf.absolute_path)) or '<root>'}: {leaf.message[:300]}")
    if isinstance(body, dict) and isinstance(body.get("messages"), list):
        problems += _conversation_problems(body["messages"])
    return problems


def _conversation_problems(messages: list[Any]) -> list[str]:
    """Rules the schema cannot express: no empty content, tool results answer earlier tool uses."""
    problems = []
    tool_ids: set[Any] = set()
    for i, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if content in ("", []):
            problems.append(f"messages/{i}/content: empty content is rejected by the API")
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use":
                tool_ids.add(block.get("id"))
            elif block.get("type") == "tool_result" and block.get("tool_use_id") not in tool_ids:
                unknown = block.get("tool_use_id")
                problems.append(f"messages/{i}/content/{j}: tool_result for unknown tool_use_id {unknown!r}")
    return problems


def _model_problems(model: Any, doc: Any) -> list[str]:
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(model).validate_python(doc)
    except ValidationError as e:
        return [f"{'/'.join(map(str, err['loc']))}: {err['msg']} [{err['type']}]" for err in e.errors()[:8]]
    return []


def response_problems(doc: Any) -> list[str]:
    """A Message, or an error body, as the SDK's models read it."""
    from anthropic.types import ErrorResponse, Message

    model = ErrorResponse if isinstance(doc, dict) and doc.get("type") == "error" else Message
    return [f"{model.__name__}: {line}" for line in _model_problems(model, doc)]


class _StreamState:
    """The order rules of a Messages stream: one message_start, contiguous blocks opened and closed,
    deltas that fit their block, message_delta with output tokens, then message_stop."""

    def __init__(self) -> None:
        self.phase = "start"
        self.open: set[int] = set()
        self.seen: set[int] = set()
        self.block_types: dict[int, str] = {}
        self.problems: list[str] = []

    def event(self, where: str, kind: str, event: dict[str, Any]) -> None:
        if self.phase == "start" and kind != "message_start":
            self.problems.append(f"{where}: first event must be message_start, got {kind}")
        if kind == "message_start":
            if self.phase != "start":
                self.problems.append(f"{where}: duplicate message_start")
            self.phase = "body"
            if "input_tokens" not in (event["message"].get("usage") or {}):
                self.problems.append(f"{where}: message_start.message.usage.input_tokens missing")
        elif kind == "content_block_start":
            self._block_start(where, event["index"], event["content_block"]["type"])
        elif kind == "content_block_delta":
            index, delta = event["index"], event["delta"]["type"]
            if index not in self.open:
                self.problems.append(f"{where}: delta for block {index} that is not open")
            allowed = DELTAS_FOR_BLOCK.get(self.block_types.get(index, ""))
            if allowed and delta not in allowed:
                self.problems.append(f"{where}: {delta} not valid for a {self.block_types[index]} block")
        elif kind == "content_block_stop":
            if event["index"] not in self.open:
                self.problems.append(f"{where}: stop for block {event['index']} that is not open")
            self.open.discard(event["index"])
        elif kind == "message_delta":
            # Blocks may still be open here: the SDK's own recorded max_tokens stream does that.
            if "output_tokens" not in (event.get("usage") or {}):
                self.problems.append(f"{where}: message_delta.usage.output_tokens missing")
            self.phase = "delta"
        elif kind == "message_stop":
            if self.phase != "delta":
                self.problems.append(f"{where}: message_stop without a preceding message_delta")
            self.phase = "stopped"

    def _block_start(self, where: str, index: int, block_type: str) -> None:
        if index in self.seen:
            self.problems.append(f"{where}: content block {index} started twice")
        elif self.seen and index != max(self.seen) + 1:
            self.problems.append(f"{where}: content block index {index} not contiguous")
        elif not self.seen and index != 0:
            self.problems.append(f"{where}: first content block index must be 0")
        self.seen.add(index)
        self.open.add(index)
        self.block_types[index] = block_type


def sse_problems(text: str) -> list[str]:
    """A Messages stream: each event valid for the SDK (GA or beta types), in a valid order."""
    import anthropic.types as ga
    import anthropic.types.beta as beta
    from anthropic.types import ErrorResponse

    state = _StreamState()
    count = 0
    for i, (name, data) in enumerate(iter_sse(text)):
        where = f"event {i} ({name})"
        try:
            event = json.loads(data)
        except ValueError as e:
            state.problems.append(f"{where}: data is not JSON: {e}")
            continue
        count += 1
        kind = event.get("type") if isinstance(event, dict) else None
        if name is not None and name != kind:
            state.problems.append(f"{where}: SSE event name {name!r} != data.type {kind!r}")
        if kind == "ping":
            continue
        if kind == "error":
            state.problems += [f"{where}: {p}" for p in _model_problems(ErrorResponse, event)]
            state.phase = "errored"
            continue
        if kind not in EVENT_MODELS:
            continue  # clients must ignore unknown events
        assert isinstance(event, dict)
        errors = _model_problems(getattr(ga, EVENT_MODELS[kind]), event)
        if errors and _model_problems(getattr(beta, "Beta" + EVENT_MODELS[kind]), event):
            state.problems.append(f"{where}: " + "; ".join(errors))
            if kind == "message_start" and state.phase == "start":
                state.phase = "body"
            continue
        state.event(where, kind, event)
    if count == 0:
        state.problems.append("no events")
    elif state.phase not in ("stopped", "errored"):
        state.problems.append(f"stream ended in state {state.phase!r} (no message_stop)")
    return state.problems
