"""Fallback chains: which models to try after a slug's own provider fails, and when."""

from __future__ import annotations

from sqlmodel import Session, col, select

from control_plane.errors import InvalidRequest, NotFound
from control_plane.resources import models
from control_plane.schemas import RouteIn, RouteOut
from control_plane.store.tables import Route


def to_out(row: Route) -> RouteOut:
    return RouteOut(
        slug=row.slug,
        fallbacks=list(row.fallbacks),
        retry_on=list(row.retry_on),
        attempt_timeout_s=row.attempt_timeout_s,
        total_timeout_s=row.total_timeout_s,
    )


def list_all(session: Session) -> list[Route]:
    return list(session.exec(select(Route).order_by(col(Route.slug))))


def get(session: Session, slug: str) -> Route:
    row = session.get(Route, slug)
    if row is None:
        raise NotFound(f"model {slug!r} has no route", param="slug")
    return row


def put(session: Session, slug: str, body: RouteIn) -> Route:
    """Create or replace; on an existing route, fields the body omits keep their value."""
    models.get(session, slug)
    row = session.get(Route, slug)
    given = body.model_fields_set
    if row is None:
        row = Route(slug=slug, fallbacks=[], retry_on=[], attempt_timeout_s=0.0, total_timeout_s=0.0)
        given = set(RouteIn.model_fields)
        session.add(row)
    if "fallbacks" in given:
        if slug in body.fallbacks:
            raise InvalidRequest("a model cannot be its own fallback", param="fallbacks")
        models.require_existing(session, body.fallbacks, param="fallbacks")
        row.fallbacks = list(body.fallbacks)
    if "retry_on" in given:
        row.retry_on = list(body.retry_on)
    if "attempt_timeout_s" in given:
        row.attempt_timeout_s = body.attempt_timeout_s
    if "total_timeout_s" in given:
        row.total_timeout_s = body.total_timeout_s
    if row.attempt_timeout_s > row.total_timeout_s:
        raise InvalidRequest("attempt_timeout_s must not exceed total_timeout_s", param="attempt_timeout_s")
    return row


def delete(session: Session, slug: str) -> None:
    session.delete(get(session, slug))
