"""Configuration revision and in-process change notification.

Every configuration write bumps the single `config_revision` row in the same
transaction as the change, so the revision is a consistent version for xDS and lets
several control-plane replicas sharing one database converge by polling it. Within
one process, subscribers hear about a commit at once through `notify()`.

Each served row written by a mutation is stamped with that mutation's revision
(`updated_revision`), and each deleted one leaves a `ConfigTombstone`: the publisher
then reads "what changed since revision N" through an index instead of every table.
The revision is taken at the mutation's first flush and its row stays locked until the
commit, so revisions commit in order: once revision N is visible, every row stamped
N or less is too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, update
from sqlmodel import Session, col, select

from control_plane.store.tables import (
    ApiKey,
    ConfigRevision,
    ConfigTombstone,
    Model,
    Provider,
    Route,
    Workspace,
)

log = logging.getLogger(__name__)

Callback = Callable[[], None]

_CHANGED = "infery_config_changed"  # session.info flag set by a flush that wrote something
_REVISION = "infery_config_revision"  # session.info: the revision this mutation writes
# The tables served over xDS, by the kind their tombstones carry.
SERVED_TABLES: dict[type[Any], str] = {
    Provider: "providers",
    Model: "models",
    Route: "routes",
    Workspace: "workspaces",
    ApiKey: "api_keys",
}
_subscribers: list[Callback] = []
_lock = threading.Lock()


def subscribe(callback: Callback) -> Callable[[], None]:
    """Call `callback()` after every committed configuration change; returns an unsubscribe function.

    The callback runs in the thread that committed (often a worker thread of the admin
    API), so it must be cheap and thread-safe, e.g. `loop.call_soon_threadsafe(event.set)`.
    """
    with _lock:
        _subscribers.append(callback)

    def unsubscribe() -> None:
        with _lock:
            if callback in _subscribers:
                _subscribers.remove(callback)

    return unsubscribe


def notify() -> None:
    with _lock:
        callbacks = list(_subscribers)
    for callback in callbacks:
        try:
            callback()
        except Exception:  # one broken subscriber must not fail an admin call that already committed
            log.exception("configuration change subscriber failed")


def current_revision(session: Session) -> int:
    revision = session.exec(select(ConfigRevision.revision).where(col(ConfigRevision.id) == 1)).first()
    return int(revision or 0)


def bump_revision(session: Session) -> int:
    """Increment the revision inside the caller's transaction (atomic across replicas); the new value.

    Runs on the session's connection, not through the ORM, so that it can run inside a flush.
    """
    connection = session.connection()
    result = connection.execute(
        update(ConfigRevision)
        .where(col(ConfigRevision.id) == 1)
        .values(revision=col(ConfigRevision.revision) + 1)
    )
    if result.rowcount == 0:
        connection.execute(ConfigRevision.__table__.insert().values(id=1, revision=1))  # type: ignore[attr-defined]
    revision = connection.execute(select(ConfigRevision.revision).where(col(ConfigRevision.id) == 1)).scalar()
    return int(revision or 0)


def claim_revision(session: Session) -> int:
    """The revision this mutation writes, for rows written by a bulk statement the ORM does not see.

    The caller stamps those rows' `updated_revision` with it.
    """
    mark_changed(session)
    revision = session.info.get(_REVISION)
    if revision is None:
        revision = session.info[_REVISION] = bump_revision(session)
    return int(revision)


def mark_changed(session: Session) -> None:
    """Record a change the ORM cannot see (a bulk UPDATE/DELETE statement)."""
    session.info[_CHANGED] = True


def is_changed(session: Session) -> bool:
    """Whether this mutation has changed anything so far (flush first)."""
    return bool(session.info.get(_CHANGED))


def _record_flush(session: Session, _context: object, _instances: object) -> None:
    modified = [obj for obj in session.dirty if session.is_modified(obj)]
    if not (session.new or session.deleted or modified):
        return
    revision = claim_revision(session)
    for obj in (*session.new, *modified):
        if type(obj) in SERVED_TABLES:
            obj.updated_revision = revision
    for obj in list(session.deleted):
        kind = SERVED_TABLES.get(type(obj))
        if kind is not None:
            session.merge(ConfigTombstone(kind=kind, key=str(_primary_key(obj)), revision=revision))


def _primary_key(row: Any) -> object:
    return row.slug if isinstance(row, (Model, Route)) else row.name if isinstance(row, Provider) else row.id


@contextmanager
def mutation(session_factory: Callable[[], Session]) -> Iterator[Session]:
    """A session for one configuration change: commit, bump the revision, then notify.

    Nothing is bumped or announced when the block changed nothing, so re-applying the
    same configuration (or an identical PUT) leaves the revision and the data plane alone.
    """
    with session_factory() as session:
        event.listen(session, "before_flush", _record_flush)
        yield session
        session.flush()
        changed = bool(session.info.pop(_CHANGED, False))
        if changed and session.info.pop(_REVISION, None) is None:
            bump_revision(session)  # a change the ORM did not flush (see `mark_changed`)
        session.commit()
    if changed:
        notify()
