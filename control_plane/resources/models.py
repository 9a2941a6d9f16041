"""Models: a slug clients use, the provider serving it, its prices and capabilities."""

from __future__ import annotations

from sqlmodel import Session, col, select

from control_plane import catalog
from control_plane.errors import AlreadyExists, InUse, InvalidRequest, NotFound
from control_plane.resources.providers import get as get_provider
from control_plane.schemas import ModelIn, ModelOut, ModelUpdate, Prices
from control_plane.store.tables import PRICE_FIELDS, Model, Provider, Route, Workspace


def to_out(row: Model) -> ModelOut:
    return ModelOut(
        slug=row.slug,
        provider=row.provider,
        upstream_model=row.upstream_model,
        prices=Prices(**{name: getattr(row, name) for name in PRICE_FIELDS}),
        capabilities=list(row.capabilities),
        created=int(row.created_at.timestamp()),
    )


def list_all(session: Session, provider: str | None = None) -> list[Model]:
    statement = select(Model).order_by(col(Model.slug))
    if provider is not None:
        statement = statement.where(col(Model.provider) == provider)
    return list(session.exec(statement))


def get(session: Session, slug: str) -> Model:
    row = session.get(Model, slug)
    if row is None:
        raise NotFound(f"model {slug!r} does not exist", param="slug")
    return row


def create(session: Session, body: ModelIn) -> Model:
    if session.get(Model, body.slug) is not None:
        raise AlreadyExists(f"model {body.slug!r} already exists", param="slug")
    _require_provider(session, body.provider)
    known = catalog.catalog().get(body.slug)
    upstream_model = body.upstream_model or (known.upstream_model if known else None)
    if upstream_model is None:
        raise InvalidRequest(
            f"{body.slug!r} is not in the catalog: upstream_model is required", param="upstream_model"
        )
    prices = body.prices or (known.prices if known else Prices())
    capabilities: list[str] = list(known.capabilities) if known else []
    if body.capabilities is not None:
        capabilities = list(body.capabilities)
    row = Model(
        slug=body.slug, provider=body.provider, upstream_model=upstream_model, capabilities=capabilities
    )
    _set_prices(row, prices)
    session.add(row)
    return row


def update(session: Session, slug: str, body: ModelUpdate) -> Model:
    row = get(session, slug)
    if body.slug is not None and body.slug != slug:
        raise InvalidRequest("a model cannot be renamed; create a new one", param="slug")
    if body.provider is not None:
        _require_provider(session, body.provider)
        row.provider = body.provider
    if body.upstream_model is not None:
        row.upstream_model = body.upstream_model
    if body.prices is not None:
        _set_prices(row, body.prices)
    if body.capabilities is not None:
        row.capabilities = list(body.capabilities)
    return row


def delete(session: Session, slug: str) -> None:
    row = get(session, slug)
    for route in session.exec(select(Route)):
        if slug in route.fallbacks:
            raise InUse(f"model {slug!r} is a fallback of route {route.slug!r}", param="slug")
    for workspace in session.exec(select(Workspace)):
        if slug in workspace.allowed_models:
            raise InUse(f"model {slug!r} is allowed in workspace {workspace.name!r}", param="slug")
    own_route = session.get(Route, slug)
    if own_route is not None:
        session.delete(own_route)
        session.flush()  # the ORM does not know the route depends on the model: delete it first
    session.delete(row)


def import_catalog(session: Session, provider: str) -> list[Model]:
    """Create every catalog model of the provider's kind that does not exist yet (idempotent)."""
    kind = get_provider(session, provider).kind
    return [
        create(session, ModelIn(slug=entry.slug, provider=provider))
        for entry in catalog.for_kind(kind)
        if session.get(Model, entry.slug) is None
    ]


def existing_slugs(session: Session, slugs: list[str]) -> set[str]:
    if not slugs:
        return set()
    return set(session.exec(select(Model.slug).where(col(Model.slug).in_(slugs))))


def require_existing(session: Session, slugs: list[str], param: str) -> None:
    missing = [slug for slug in slugs if slug not in existing_slugs(session, slugs)]
    if missing:
        raise InvalidRequest(f"unknown model(s): {', '.join(missing)}", param=param)


def _require_provider(session: Session, name: str) -> Provider:
    try:
        return get_provider(session, name)
    except NotFound:
        raise InvalidRequest(f"provider {name!r} does not exist", param="provider") from None


def _set_prices(row: Model, prices: Prices) -> None:
    for name in PRICE_FIELDS:
        setattr(row, name, getattr(prices, name))
