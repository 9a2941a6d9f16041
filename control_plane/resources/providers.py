"""Provider accounts. The api_key is write-only: it leaves only through xDS."""

from __future__ import annotations

from sqlmodel import Session, col, select

from control_plane.errors import AlreadyExists, InUse, InvalidRequest, NotFound
from control_plane.resources.provider_hosts import forbidden_host_reason
from control_plane.schemas import ProviderIn, ProviderOut, ProviderUpdate
from control_plane.store.tables import Model, Provider


def to_out(row: Provider) -> ProviderOut:
    return ProviderOut(name=row.name, kind=row.kind, base_url=row.base_url, has_api_key=bool(row.api_key))


def list_all(session: Session) -> list[Provider]:
    return list(session.exec(select(Provider).order_by(col(Provider.name))))


def get(session: Session, name: str) -> Provider:
    row = session.get(Provider, name)
    if row is None:
        raise NotFound(f"provider {name!r} does not exist", param="name")
    return row


def create(session: Session, body: ProviderIn) -> Provider:
    if session.get(Provider, body.name) is not None:
        raise AlreadyExists(f"provider {body.name!r} already exists", param="name")
    _check_host(body.base_url)
    row = Provider(name=body.name, kind=body.kind, base_url=body.base_url, api_key=body.api_key or None)
    session.add(row)
    return row


def update(session: Session, name: str, body: ProviderUpdate) -> Provider:
    row = get(session, name)
    if body.name is not None and body.name != name:
        raise InvalidRequest("a provider cannot be renamed; create a new one", param="name")
    if body.kind is not None:
        row.kind = body.kind
    if body.base_url is not None and body.base_url != row.base_url:
        _check_host(body.base_url)
        if row.api_key and "api_key" not in body.model_fields_set:
            # The stored key was given for the old host: never send it to a new one unasked.
            raise InvalidRequest(
                "changing a provider's base_url needs its api_key again (or api_key: null)", param="api_key"
            )
        row.base_url = body.base_url
    if "api_key" in body.model_fields_set:
        row.api_key = body.api_key or None
    return row


def _check_host(base_url: str) -> None:
    reason = forbidden_host_reason(base_url)
    if reason:
        raise InvalidRequest(f"base_url: {reason}; provider keys are never sent there", param="base_url")


def delete(session: Session, name: str) -> None:
    row = get(session, name)
    used_by = session.exec(select(Model.slug).where(col(Model.provider) == name).limit(5)).all()
    if used_by:
        raise InUse(f"provider {name!r} still serves models {', '.join(used_by)}", param="name")
    session.delete(row)
