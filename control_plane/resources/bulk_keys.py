"""Many keys for one member in one statement: for load tests, benches and migrations from
another gateway, where creating 10^5 keys one admin call at a time would take minutes.

The rows are stamped with the mutation's revision like any other write, so the data
plane receives them incrementally like keys created through the admin API.
"""

from __future__ import annotations

from sqlalchemy import insert

from control_plane.resources.keys import DISPLAY_PREFIX_CHARS, hash_secret, new_secret
from control_plane.store.changes import claim_revision, mutation
from control_plane.store.db import SessionFactory
from control_plane.store.tables import ApiKey, new_id, utcnow

_ROWS_PER_STATEMENT = 5000


def create_keys(
    session_factory: SessionFactory, workspace_id: str, member_id: str, count: int, name: str = "bulk"
) -> list[tuple[str, str]]:
    """Create `count` keys in one transaction; their (id, secret), secrets shown this once."""
    created = [(new_id(), new_secret()) for _ in range(count)]
    now = utcnow()
    with mutation(session_factory) as session:
        revision = claim_revision(session)
        rows = [
            {
                "id": key_id,
                "workspace_id": workspace_id,
                "member_id": member_id,
                "name": name,
                "prefix": secret[:DISPLAY_PREFIX_CHARS],
                "key_hash": hash_secret(secret),
                "created_at": now,
                "revoked_at": None,
                "updated_revision": revision,
            }
            for key_id, secret in created
        ]
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            session.connection().execute(insert(ApiKey), rows[start : start + _ROWS_PER_STATEMENT])
    return created
