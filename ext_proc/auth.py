"""Authentication of an ``inf_`` key: ``Authorization: Bearer inf_...`` or ``x-api-key: inf_...``.

OpenAI's SDKs send the key as a bearer token; Anthropic's API takes it in ``x-api-key`` (its
SDK sends either), so both are read, on every path: a bearer token decides when present, else
``x-api-key``. Neither header ever reaches a provider (ext_proc/header_policy.py's allow-list
names neither; a provider's own key is set by its translator).

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
_MISSING = "Missing API key: send 'Authorization: Bearer inf_...' (or 'x-api-key: inf_...')."
_UNKNOWN = "Incorrect, unknown or revoked API key."


def presented(authorization: str | None, api_key: str | None) -> str:
    """The secret a request presents (its two headers, or None): the bearer token, else
    ``x-api-key``; "" for none. What :func:`authenticate` checks, and what an emulated n's extra
    choices are asked with (ext_proc/extra_calls.py), so both are the same key."""
    if authorization and authorization.startswith(_PREFIX):
        return authorization[len(_PREFIX) :].strip()
    return api_key.strip() if api_key else ""


def authenticate(authorization: str | None, api_key: str | None, config: GatewayConfig) -> ApiKey:
    """The key a request presents (``authorization``, ``api_key``: its two headers, or None)."""
    secret = presented(authorization, api_key)
    if not secret:
        raise GatewayError(401, "invalid_api_key", _MISSING)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    record = config.keys_by_hash.get(digest)
    if record is None:
        raise GatewayError(401, "invalid_api_key", _UNKNOWN)
    key_id, key_hash, workspace_id, member_id, name = record
    workspace = config.workspaces.get(workspace_id)
    if workspace is None or not hmac.compare_digest(digest, key_hash):
        raise GatewayError(401, "invalid_api_key", _UNKNOWN)
    return ApiKey(key_id, key_hash, workspace, member_id, name)
