"""Conversation state of the Responses API: what ``store`` keeps and ``previous_response_id`` continues.

The gateway keeps every stored response of a workspace itself (the control plane's
``infery.v1.ResponseStore``, reached through :mod:`ext_proc.response_store`), whichever
provider served it, and rebuilds the conversation for the next turn on every provider:
``previous_response_id`` is replaced by the items it stands for (the earlier turns' input,
then that response's output) ahead of the request's own ``input``, before any translation.
No provider's own conversation state is used, OpenAI's included: a conversation may move
between providers (a fallback, another model), and an id the gateway did not check
against the workspace never reaches a provider.

What a kept response holds: its response object as the client got it, and its input items
-- the whole input the model saw, earlier turns first, each item with an id -- which is what
``GET /v1/responses/{id}/input_items`` lists (OpenAI does not carry ``instructions`` over
to a next turn, and neither does this). Pure functions: no I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import orjson

from ext_proc.errors import GatewayError
from ext_proc.translators.responses_documents import new_id

# OpenAI's id prefix of each input item type it lists (others keep theirs, or get "item").
_ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}
MAX_LIST_LIMIT = 100
DEFAULT_LIST_LIMIT = 20


def input_items(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The request's ``input`` as items, as OpenAI lists them: a string is a user message,
    a message's string content an ``input_text`` part, every item has a ``type`` and an id."""
    raw = body.get("input")
    if isinstance(raw, str):
        raw = [{"role": "user", "content": raw}]
    items = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict):
            continue
        item = dict(item)
        kind = item.setdefault("type", "message")
        if kind == "message":
            content = item.get("content")
            if isinstance(content, str):
                part = "output_text" if item.get("role") == "assistant" else "input_text"
                item["content"] = [_text_part(part, content)]
            item.setdefault("status", "completed")
        if not isinstance(item.get("id"), str) or not item["id"]:
            item["id"] = new_id(_ID_PREFIXES.get(str(kind), "item"))
        items.append(item)
    return items


def _text_part(kind: str, text: str) -> dict[str, Any]:
    if kind == "output_text":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "input_text", "text": text}


def history(input_json: bytes, response_json: bytes) -> list[dict[str, Any]]:
    """The items a kept response stands for in a next turn: its input, then its output."""
    kept_input = orjson.loads(input_json) if input_json else []
    response = orjson.loads(response_json) if response_json else {}
    output = response.get("output") if isinstance(response, dict) else None
    return [*kept_input, *(item for item in output or [] if isinstance(item, dict))]


def continued(body: dict[str, Any], earlier: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The whole input of a request continuing ``earlier`` (a kept response's history), returned
    with ids (what is kept); ``body["input"]`` becomes the earlier items as a client would give
    them back, then its own input (what every translator sends)."""
    items = [*earlier, *input_items(body)]
    own = body.get("input")
    if isinstance(own, str):
        given: list[Any] = [{"role": "user", "content": own}]
    else:
        given = own if isinstance(own, list) else []
    body["input"] = [*(_given_back(item) for item in earlier), *given]
    return items


def _given_back(item: dict[str, Any]) -> dict[str, Any]:
    """A kept item as input again. An input message has no id (OpenAI's input message types
    declare none); an output message keeps its id and status, which OpenAI requires of it."""
    if item.get("type") == "message" and item.get("role") != "assistant":
        return {k: v for k, v in item.items() if k != "id"}
    return item


def kept_response(
    workspace_id: str, response: bytes, items: list[dict[str, Any]]
) -> tuple[str, str, int, bytes, bytes] | None:
    """(workspace, id, created_at, response JSON, input items JSON) of an answer to keep; None
    for an answer that is not a response object with an id."""
    try:
        doc = orjson.loads(response)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or doc.get("object") != "response" or not isinstance(doc.get("id"), str):
        return None
    created = doc.get("created_at")
    created_at = int(created) if isinstance(created, int | float) else 0
    return workspace_id, doc["id"], created_at, response, orjson.dumps(items)


def final_response(last: bytes) -> bytes | None:
    """The response object of a stream's last event (``response.completed``/``.incomplete``),
    without the gateway's ``credits_used``; None for any other event."""
    try:
        event = orjson.loads(last)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("type") not in ("response.completed", "response.incomplete"):
        return None
    response = event.get("response")
    return orjson.dumps(response) if isinstance(response, dict) else None


# ------------------------------------------------------------------ /v1/responses/{id}...


def parse_path(path: str) -> tuple[str, bool]:
    """(response id, whether the input items are asked) of ``/v1/responses/{id}[/input_items]``;
    404 ``not_found`` for any other path under ``/v1/responses/``."""
    rest = path[len("/v1/responses/") :]
    response_id, _, tail = rest.partition("/")
    if not response_id or tail not in ("", "input_items"):
        raise GatewayError(404, "not_found", f"Unknown path {path}.")
    return response_id, tail == "input_items"


def not_found(response_id: str) -> GatewayError:
    return GatewayError(404, "not_found", f"Response with id '{response_id}' not found.", "response_id")


def item_list(items_json: bytes, query: str) -> bytes:
    """``GET /v1/responses/{id}/input_items``: OpenAI's ``list`` of input items, newest first unless
    ``order=asc``, ``limit`` (1-100, 20) of them after the item ``after``."""
    params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise GatewayError(400, "invalid_value", "order must be 'asc' or 'desc'.", "order")
    try:
        limit = int(params.get("limit", DEFAULT_LIST_LIMIT))
    except ValueError:
        raise GatewayError(400, "invalid_type", "limit must be an integer.", "limit") from None
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise GatewayError(400, "invalid_value", f"limit must be between 1 and {MAX_LIST_LIMIT}.", "limit")
    items = orjson.loads(items_json) if items_json else []
    if order == "desc":
        items.reverse()
    after = params.get("after")
    if after:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise GatewayError(404, "not_found", f"No input item with id '{after}'.", "after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return orjson.dumps(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > limit,
        }
    )


def deleted(response_id: str) -> bytes:
    return orjson.dumps({"id": response_id, "object": "response", "deleted": True})
