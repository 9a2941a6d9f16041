"""Conversation state of the Responses API: the items kept, the conversation rebuilt for a next turn,
and the answers of /v1/responses/{id} and its input_items."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ext_proc import conversations
from ext_proc.errors import GatewayError
from tests.conformance import assert_openai

ANSWER = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1_800_000_000,
    "output": [
        {
            "id": "msg_a",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Hi Ada", "annotations": [], "logprobs": []}],
        }
    ],
}


def test_input_items_have_types_parts_and_ids() -> None:
    items = conversations.input_items(
        {
            "input": [
                {"role": "user", "content": "my name is Ada"},
                {"type": "message", "role": "assistant", "content": "noted"},
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c", "output": "ok", "id": "fco_given"},
            ]
        }
    )
    assert [i["type"] for i in items] == ["message", "message", "function_call", "function_call_output"]
    assert items[0]["content"] == [{"type": "input_text", "text": "my name is Ada"}]
    assert items[1]["content"][0]["type"] == "output_text"
    assert [i["id"][: i["id"].index("_")] for i in items[:3]] == ["msg", "msg", "fc"]
    assert items[3]["id"] == "fco_given"  # an id the client gave is kept
    assert conversations.input_items({"input": "hi"})[0]["content"] == [{"type": "input_text", "text": "hi"}]


def test_a_next_turn_gets_the_kept_input_and_output_ahead_of_its_own() -> None:
    first = conversations.input_items({"input": "my name is Ada"})
    earlier = conversations.history(orjson.dumps(first), orjson.dumps(ANSWER))
    assert [i["id"] for i in earlier] == [first[0]["id"], "msg_a"]
    body: dict[str, Any] = {"model": "m", "input": "what is my name?", "previous_response_id": "resp_1"}
    kept = conversations.continued(body, earlier)
    # what is kept: every item with an id
    assert [i.get("role") for i in kept] == ["user", "assistant", "user"] and all(i["id"] for i in kept)
    # what providers get: input messages without ids (OpenAI's input message types have none),
    # output messages with theirs (OpenAI requires them), then the request's own input as given
    assert body["input"] == [
        {"type": "message", "role": "user", "status": "completed", "content": first[0]["content"]},
        ANSWER["output"][0],
        {"role": "user", "content": "what is my name?"},
    ]
    assert body["previous_response_id"] == "resp_1"  # echoed; translators do not read it


def test_only_response_objects_are_kept() -> None:
    kept = conversations.kept_response("ws", orjson.dumps(ANSWER), [{"id": "msg_1"}])
    assert kept is not None
    assert kept[:3] == ("ws", "resp_1", 1_800_000_000) and orjson.loads(kept[4]) == [{"id": "msg_1"}]
    assert conversations.kept_response("ws", b'{"error":{}}', []) is None
    assert conversations.kept_response("ws", b"not json", []) is None


def test_a_streams_final_response_is_kept_without_the_charge() -> None:
    last = orjson.dumps({"type": "response.completed", "sequence_number": 9, "response": ANSWER})
    assert orjson.loads(conversations.final_response(last) or b"") == ANSWER
    incomplete = orjson.dumps({"type": "response.incomplete", "sequence_number": 9, "response": ANSWER})
    assert conversations.final_response(incomplete) is not None
    assert conversations.final_response(b'{"type":"error","code":"x"}') is None


@pytest.mark.parametrize(
    ("path", "parsed"),
    [("/v1/responses/resp_1", ("resp_1", False)), ("/v1/responses/resp_1/input_items", ("resp_1", True))],
)
def test_paths(path: str, parsed: tuple[str, bool]) -> None:
    assert conversations.parse_path(path) == parsed


@pytest.mark.parametrize(
    "path", ["/v1/responses/", "/v1/responses/resp_1/other", "/v1/responses/resp_1/input_items/x"]
)
def test_other_paths_are_not_found(path: str) -> None:
    with pytest.raises(GatewayError) as info:
        conversations.parse_path(path)
    assert (info.value.status, info.value.code) == (404, "not_found")


ITEMS = orjson.dumps(
    [
        {
            "id": f"msg_{i}",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": str(i)}],
        }
        for i in range(5)
    ]
)


def ids(page: bytes) -> list[str]:
    doc = orjson.loads(page)
    assert_openai(doc, "ResponseItemList")
    return [item["id"] for item in doc["data"]]


def test_input_items_are_listed_newest_first_in_pages() -> None:
    assert ids(conversations.item_list(ITEMS, "")) == ["msg_4", "msg_3", "msg_2", "msg_1", "msg_0"]
    assert ids(conversations.item_list(ITEMS, "order=asc&limit=2")) == ["msg_0", "msg_1"]
    page = orjson.loads(conversations.item_list(ITEMS, "order=asc&limit=2&after=msg_1"))
    assert [i["id"] for i in page["data"]] == ["msg_2", "msg_3"]
    assert (page["first_id"], page["last_id"], page["has_more"]) == ("msg_2", "msg_3", True)
    assert orjson.loads(conversations.item_list(ITEMS, "order=asc&after=msg_2"))["has_more"] is False


@pytest.mark.parametrize(
    ("query", "code", "param"),
    [
        ("order=up", "invalid_value", "order"),
        ("limit=0", "invalid_value", "limit"),
        ("limit=x", "invalid_type", "limit"),
        ("after=msg_9", "not_found", "after"),
    ],
)
def test_bad_list_parameters(query: str, code: str, param: str) -> None:
    with pytest.raises(GatewayError) as info:
        conversations.item_list(ITEMS, query)
    assert (info.value.code, info.value.param) == (code, param)
