"""A batch worker's line: who it acts for, checked instead of an ``inf_`` key.

A batch (``/v1/batches``) is executed by the gateway's batch workers
(control_plane/batches/worker.py), which send each line through the listener as a
request of the key that created the batch. They hold no key (keys are stored as
hashes); they present a :mod:`infery_proto.batch_assertion` in
:data:`~infery_proto.wire.BATCH_LINE_HEADER` instead. This module verifies it and
returns the key it names, so the rest of the exchange (limits, routing, fallback,
metering) treats the line as that key's request, with three differences the
exchange applies:

- the idempotency key is derived from the batch id and the line's ``custom_id``
  (a line sent twice is charged once), whatever the request carries;
- admission is against the workspace's batch lane (ext_proc/limits.py), never its
  live buckets;
- the usage record carries the batch id and the ``custom_id``.

The assertion must name the very path requested; the key must still exist (a key
revoked mid-batch stops its batch's lines) and belong to the workspace it names.
"""

from __future__ import annotations

from infery_proto import batch_assertion
from infery_proto.batch_assertion import BatchLine

from ext_proc.config import ApiKey, GatewayConfig
from ext_proc.errors import GatewayError

_REFUSED = "Invalid batch line credential."


def authenticate_line(value: str, path: str, config: GatewayConfig) -> tuple[ApiKey, BatchLine]:
    """The key a batch line acts for, and the line; 401 ``invalid_api_key`` for anything else."""
    line = batch_assertion.verify(config.batch_line_key, value)
    if line is None or line.endpoint != path:
        raise GatewayError(401, "invalid_api_key", _REFUSED)
    record = config.keys_by_hash.by_id(line.key_id)
    if record is None:
        raise GatewayError(401, "invalid_api_key", "The batch's API key was revoked.")
    key_id, key_hash, workspace_id, member_id, name = record
    workspace = config.workspaces.get(workspace_id)
    if workspace is None or workspace_id != line.workspace_id or member_id != line.member_id:
        raise GatewayError(401, "invalid_api_key", _REFUSED)
    return ApiKey(key_id, key_hash, workspace, member_id, name), line
