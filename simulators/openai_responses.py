"""OpenAI's Responses API: the request reduced to a neutral prompt, the answer as a ``response``
object or as OpenAI's event stream, and the responses the simulated account keeps.

As the real API: ``input`` is a string or items (messages, ``function_call``,
``function_call_output``), ``instructions`` count as a message, ``previous_response_id``
continues a kept response (404 when unknown or deleted), ``store: false`` keeps nothing.
The stream is OpenAI's: every event named by an ``event:`` line equal to its ``type``,
``sequence_number`` from 0, ``response.created`` .. ``response.completed`` (or
``response.incomplete`` at the output limit), no ``[DONE]``.

Token counts follow ``simulators.content``: each input item (and the instructions) is a
message; text carried = text parts, function call names and arguments, function outputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from simulators import content
from simulators.content import Answer, Prompt, Tool
from simulators.provider import ApiError, new_id

MIN_OUTPUT_TOKENS = 16


@dataclass
class Kept:
    """A response the simulated account keeps: what ``previous_response_id`` continues."""

    items: list[dict[str, Any]]  # its input items and then its output items, in order
    response: dict[str, Any]


@dataclass
class Store:
    kept: dict[str, Kept] = field(default_factory=dict)

    def history(self, previous: Any) -> list[dict[str, Any]]:
        if previous is None:
            return []
        found = self.kept.get(previous) if isinstance(previous, str) else None
        if found is None:
            raise ApiError(
                404,
                f"Previous response with id '{previous}' not found.",
                code="previous_response_not_found",
                param="previous_response_id",
            )
        return list(found.items)


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("input")
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": raw}]}]
    return [i for i in raw or [] if isinstance(i, dict)]


def check_semantics(body: dict[str, Any]) -> None:
    """Rules the real API enforces that the OpenAPI schema does not express."""
    limit = body.get("max_output_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit < MIN_OUTPUT_TOKENS:
        raise ApiError(
            400,
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= "
            f"{MIN_OUTPUT_TOKENS}, but got {limit} instead.",
            code="invalid_value",
            param="max_output_tokens",
        )
    if body.get("input") is None and body.get("previous_response_id") is None:
        raise ApiError(
            400, "Missing required parameter: 'input'.", code="missing_required_parameter", param="input"
        )
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_object":
        said = orjson.dumps([body.get("input"), body.get("instructions")]).decode().lower()
        if "json" not in said:
            raise ApiError(
                400,
                "Response input messages must contain the word 'json' in some form to use 'text.format' of "
                "type 'json_object'.",
                param="input",
            )


def responses_prompt(body: dict[str, Any], items: list[dict[str, Any]]) -> Prompt:
    """Reduce a CreateResponse request (its history and input ``items``) to what the model looks at."""
    prompt = Prompt()
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        prompt.message_texts.append(instructions)
    for item in items:
        kind = item.get("type", "message")
        texts: list[str] = []
        if kind == "function_call":
            texts += [str(item.get("name", "")), str(item.get("arguments", ""))]
        elif kind == "function_call_output":
            texts.append(_text_of(item.get("output")))
        elif kind == "message":
            parts = item.get("content")
            if isinstance(parts, str):
                texts.append(parts)
            for part in parts if isinstance(parts, list) else []:
                part_kind = part.get("type") if isinstance(part, dict) else None
                if part_kind in ("input_text", "output_text"):
                    texts.append(str(part.get("text", "")))
                elif part_kind == "refusal":
                    texts.append(str(part.get("refusal", "")))
                elif part_kind == "input_image":
                    prompt.images += 1
                elif part_kind == "input_file":
                    prompt.documents += 1
        else:
            continue  # reasoning and other items carry nothing the simulated model reads
        text = " ".join(t for t in texts if t)
        prompt.message_texts.append(text)
        if kind == "message" and item.get("role") == "user":
            prompt.last_user_text = text
    trailing: list[str] = []
    for item in reversed(items):
        if item.get("type") != "function_call_output":
            break
        trailing.insert(0, _text_of(item.get("output")))
    prompt.tool_results = trailing or None

    prompt.tools = [
        Tool(str(t.get("name")), t.get("parameters") or {})
        for t in body.get("tools") or []
        if isinstance(t, dict) and t.get("type") == "function"
    ]
    choice = body.get("tool_choice", "auto")
    if isinstance(choice, dict):
        choice = (
            f"name:{choice['name']}"
            if choice.get("type") == "function" and choice.get("name")
            else "required"
        )
    prompt.tool_choice = choice if isinstance(choice, str) else "auto"
    prompt.parallel_tool_calls = body.get("parallel_tool_calls", True) is not False
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        prompt.json_mode = True
        prompt.json_schema = fmt.get("schema") or None
    limit = body.get("max_output_tokens")
    prompt.max_tokens = limit if isinstance(limit, int) else None
    return prompt


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(str(p.get("text", "")) for p in value if isinstance(p, dict))
    return ""


def usage_doc(prompt: Prompt, answer: Answer) -> dict[str, Any]:
    return {
        "input_tokens": prompt.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": answer.tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt.prompt_tokens + answer.tokens,
    }


def output_items(answer: Answer) -> list[dict[str, Any]]:
    if answer.tool_calls:
        return [
            {
                "id": f"fc_{new_id()}",
                "type": "function_call",
                "status": "completed",
                "arguments": call.arguments_json,
                "call_id": f"call_{new_id()[:24]}",
                "name": call.name,
            }
            for call in answer.tool_calls
        ]
    status = "incomplete" if answer.finish == "length" else "completed"
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": answer.text}
    return [
        {"id": f"msg_{new_id()}", "type": "message", "status": status, "content": [part], "role": "assistant"}
    ]


def response_object(
    body: dict[str, Any], response_id: str, created: int, answer: Answer | None, usage: dict[str, Any] | None
) -> dict[str, Any]:
    """A ``response`` object as OpenAI sends it (``answer`` None: still in progress)."""
    incomplete = answer is not None and answer.finish == "length"
    status = "in_progress" if answer is None else ("incomplete" if incomplete else "completed")
    text = body.get("text") or {}
    reasoning = body.get("reasoning") or {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": _dated(str(body.get("model"))),
        "output": [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default",
        "store": body.get("store", True) is not False,
        "temperature": float(body.get("temperature", 1.0)),
        "text": {
            "format": text.get("format") or {"type": "text"},
            "verbosity": text.get("verbosity") or "medium",
        },
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": [_echo_tool(t) for t in body.get("tools") or []],
        "top_logprobs": body.get("top_logprobs") or 0,
        "top_p": float(body.get("top_p", 1.0)),
        "truncation": body.get("truncation") or "disabled",
        "usage": usage,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def _dated(model: str) -> str:
    """OpenAI answers with the dated snapshot the alias names (as ``gpt-4o-mini-2024-07-18``)."""
    return {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06"}.get(model, model)


def _echo_tool(tool: Any) -> Any:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        return tool
    return {
        "type": "function",
        "name": tool.get("name"),
        "description": tool.get("description"),
        "parameters": tool.get("parameters"),
        "strict": tool.get("strict", True),
    }


def response_events(start: dict[str, Any], final: dict[str, Any]) -> list[bytes]:
    """The stream of ``final`` (the complete response), opened with ``start`` (in progress)."""
    events: list[bytes] = []

    def event(kind: str, **fields: Any) -> None:
        doc = {"type": kind, "sequence_number": len(events), **fields}
        events.append(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(doc) + b"\n\n")

    event("response.created", response=start)
    event("response.in_progress", response=start)
    for index, item in enumerate(final["output"]):
        if item["type"] == "function_call":
            event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            for piece in content.json_fragments(item["arguments"]):
                event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=piece,
                )
            event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            )
        else:
            part = item["content"][0]
            at = {"item_id": item["id"], "output_index": index, "content_index": 0}
            event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "content": []},
            )
            event("response.content_part.added", **at, part={**part, "text": ""})
            for piece in content.stream_pieces(part["text"]):
                event("response.output_text.delta", **at, delta=piece, logprobs=[], obfuscation=new_id()[:6])
            event("response.output_text.done", **at, text=part["text"], logprobs=[])
            event("response.content_part.done", **at, part=part)
        event("response.output_item.done", output_index=index, item=item)
    kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
    event(kind, response=final)
    return events
