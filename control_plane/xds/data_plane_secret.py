"""The secrets only ext_proc receives over xDS (``infery.v1.DataPlaneSecret``).

Each key is generated once and kept in the store's settings, so every control-plane
replica publishes the same keys and every ext_proc process of every gateway replica
signs with them: the attempt-grant key (chain attempts, ext_proc/attempt_grant.py)
the files identity key (what ext_proc asserts to the files service,
proto/infery_proto/identity_assertion.py; the files service reads it from the store) and
the batch line key (what a batch worker presents for each line it sends through the
listener, proto/infery_proto/batch_assertion.py; the workers read it from the store).
Envoy never subscribes to this resource type: no key is in any Envoy configuration.
"""

from __future__ import annotations

import secrets

from infery_proto.v1 import config_pb2
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from control_plane.store.tables import Setting

ATTEMPT_GRANT_KEY_SETTING = "attempt_grant_key"
FILES_IDENTITY_KEY_SETTING = "files_identity_key"
BATCH_LINE_KEY_SETTING = "batch_line_key"


def stored_key(session: Session, setting: str) -> bytes:
    """The key kept under ``setting``, created on first use (a concurrent replica's creation wins)."""
    stored = session.get(Setting, setting)
    if stored is None:
        session.add(Setting(key=setting, value=secrets.token_hex(32)))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
        stored = session.get(Setting, setting)
        assert stored is not None
    return bytes.fromhex(stored.value)


def attempt_grant_key(session: Session) -> bytes:
    return stored_key(session, ATTEMPT_GRANT_KEY_SETTING)


def files_identity_key(session: Session) -> bytes:
    return stored_key(session, FILES_IDENTITY_KEY_SETTING)


def batch_line_key(session: Session) -> bytes:
    """Signs the batch workers' lines (infery_proto/batch_assertion.py); ext_proc verifies them."""
    return stored_key(session, BATCH_LINE_KEY_SETTING)


def data_plane_secret(session: Session) -> config_pb2.DataPlaneSecret:
    """The one ``DataPlaneSecret`` resource (three reads of the settings by primary key)."""
    return config_pb2.DataPlaneSecret(
        name="data-plane",
        attempt_grant_key=attempt_grant_key(session),
        files_identity_key=files_identity_key(session),
        batch_line_key=batch_line_key(session),
    )
