"""/admin/v1/routes: fallback chains, keyed by the slug they start from."""

from __future__ import annotations

from fastapi import APIRouter, Response

from control_plane.resources import routes
from control_plane.schemas import RouteIn, RouteOut
from control_plane.store.changes import mutation
from control_plane.store.db import SessionFactory


def router(session_factory: SessionFactory) -> APIRouter:
    api = APIRouter(prefix="/routes", tags=["routes"])

    @api.get("", response_model=dict[str, list[RouteOut]])
    def list_routes() -> dict[str, list[RouteOut]]:
        with session_factory() as session:
            return {"data": [routes.to_out(row) for row in routes.list_all(session)]}

    @api.get("/{slug}", response_model=RouteOut)
    def get_route(slug: str) -> RouteOut:
        with session_factory() as session:
            return routes.to_out(routes.get(session, slug))

    @api.put("/{slug}", response_model=RouteOut)
    def put_route(slug: str, body: RouteIn) -> RouteOut:
        with mutation(session_factory) as session:
            row = routes.put(session, slug, body)
        return routes.to_out(row)

    @api.delete("/{slug}", status_code=204)
    def delete_route(slug: str) -> Response:
        with mutation(session_factory) as session:
            routes.delete(session, slug)
        return Response(status_code=204)

    return api
