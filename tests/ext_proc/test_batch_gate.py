"""ext_proc on a batch worker's line: the credential names the key, and nothing else will do."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from infery_proto import batch_assertion
from infery_proto.batch_assertion import BatchLine
from infery_proto.v1 import config_pb2

from ext_proc import config
from ext_proc.batch_gate import authenticate_line
from ext_proc.errors import GatewayError

LINE_KEY = b"b" * 32
CHAT = "/v1/chat/completions"
LINE = BatchLine("ws-a", "key-a", "member-a", "batch_1", "c-1", CHAT)


def _config(keys: list[config_pb2.ApiKey] | None = None) -> config.GatewayConfig:
    default = [
        config_pb2.ApiKey(
            id="key-a",
            key_hash=hashlib.sha256(b"inf_a").hexdigest(),
            workspace_id="ws-a",
            member_id="member-a",
        )
    ]
    return config.build(
        [],
        [],
        [config_pb2.Workspace(id="ws-a", name="a", price_multiplier="1", rpm=10, batch_rpm=2)],
        default if keys is None else keys,
        [],
        [config_pb2.DataPlaneSecret(name="d", attempt_grant_key=b"g" * 32, batch_line_key=LINE_KEY)],
    )


def test_a_valid_line_acts_as_its_key_with_its_workspaces_batch_lane():
    key, line = authenticate_line(batch_assertion.sign(LINE_KEY, LINE), CHAT, _config())
    assert (key.id, key.member_id, key.workspace.id) == ("key-a", "member-a", "ws-a")
    assert line == LINE
    lane = key.workspace.batch_lane()
    assert (lane.rpm, lane.tpm) == (2, None) and key.workspace.rpm == 10


@pytest.mark.parametrize(
    ("credential", "path", "keys"),
    [
        (batch_assertion.sign(b"x" * 32, LINE), CHAT, None),  # another key signed it
        (batch_assertion.sign(LINE_KEY, LINE), "/v1/embeddings", None),  # another endpoint
        (batch_assertion.sign(LINE_KEY, LINE), CHAT, []),  # the key was revoked
        (batch_assertion.sign(LINE_KEY, replace(LINE, workspace_id="ws-b")), CHAT, None),  # another workspace
        (batch_assertion.sign(LINE_KEY, replace(LINE, member_id="m-2")), CHAT, None),
        ("garbage", CHAT, None),
    ],
)
def test_anything_else_is_refused_as_an_invalid_key(credential: str, path: str, keys: list | None):
    with pytest.raises(GatewayError) as refused:
        authenticate_line(credential, path, _config(keys))
    assert (refused.value.status, refused.value.code) == (401, "invalid_api_key")
