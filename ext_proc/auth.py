"""Authentication of ``Authorization: Bearer inf_...``.

Only the SHA-256 of each key reaches the data plane. The lookup is by digest,
so the secret itself is never compared byte by byte; the final digest
comparison is constant-time all the same.
"""

from __future__ import annotations

import hashlib
import hmac

from ext_proc.config import ApiKey, GatewayConfig
from ext_proc.errors import GatewayError

_PREFIX = "Bearer "
_UNKNOWN = "Incorrect, unknown or revoked API key."


def authenticate(authorization: str | None, config: GatewayConfig) -> ApiKey:
    if not authorization or not authorization.startswith(_PREFIX):
        raise GatewayError(401, "invalid_api_key", "Missing API key: send 'Authorization: Bearer inf_...'.")
    secret = authorization[len(_PREFIX) :].strip()
    digest = hashlib.sha256(secret.encode()).hexdigest()
    record = config.keys_by_hash.get(digest)
    if record is None:
        raise GatewayError(401, "invalid_api_key", _UNKNOWN)
    key_id, key_hash, workspace_id, member_id, name = record
    workspace = config.workspaces.get(workspace_id)
    if workspace is None or not hmac.compare_digest(digest, key_hash):
        raise GatewayError(401, "invalid_api_key", _UNKNOWN)
    return ApiKey(key_id, key_hash, workspace, member_id, name)
