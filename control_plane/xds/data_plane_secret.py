"""The secrets only ext_proc receives over xDS (``infery.v1.DataPlaneSecret``).

The attempt-grant key is generated once and kept in the store's settings, so every
control-plane replica publishes the same key and every ext_proc process of every
gateway replica signs and verifies chain attempts with it. Envoy never subscribes
to this resource type: the key is in no Envoy configuration.
"""

from __future__ import annotations

import secrets

from infery_proto.v1 import config_pb2
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from control_plane.store.tables import Setting

ATTEMPT_GRANT_KEY_SETTING = "attempt_grant_key"


def attempt_grant_key(session: Session) -> bytes:
    """The stored key, created on first use (a concurrent replica's creation wins)."""
    stored = session.get(Setting, ATTEMPT_GRANT_KEY_SETTING)
    if stored is None:
        session.add(Setting(key=ATTEMPT_GRANT_KEY_SETTING, value=secrets.token_hex(32)))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
        stored = session.get(Setting, ATTEMPT_GRANT_KEY_SETTING)
        assert stored is not None
    return bytes.fromhex(stored.value)


def data_plane_secret(session: Session) -> config_pb2.DataPlaneSecret:
    """The one ``DataPlaneSecret`` resource (one read of the settings by primary key)."""
    return config_pb2.DataPlaneSecret(name="data-plane", attempt_grant_key=attempt_grant_key(session))
