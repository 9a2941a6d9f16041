"""/admin/v1/models"""

from __future__ import annotations

from fastapi import APIRouter, Response

from control_plane.resources import models
from control_plane.schemas import ModelIn, ModelOut, ModelUpdate
from control_plane.store.changes import mutation
from control_plane.store.db import SessionFactory


def router(session_factory: SessionFactory) -> APIRouter:
    api = APIRouter(prefix="/models", tags=["models"])

    @api.get("", response_model=dict[str, list[ModelOut]])
    def list_models(provider: str | None = None) -> dict[str, list[ModelOut]]:
        with session_factory() as session:
            return {"data": [models.to_out(row) for row in models.list_all(session, provider)]}

    @api.post("", status_code=201, response_model=ModelOut)
    def create_model(body: ModelIn) -> ModelOut:
        """A catalog slug needs only `slug` and `provider`; the rest comes from the catalog."""
        with mutation(session_factory) as session:
            row = models.create(session, body)
        return models.to_out(row)

    @api.get("/{slug}", response_model=ModelOut)
    def get_model(slug: str) -> ModelOut:
        with session_factory() as session:
            return models.to_out(models.get(session, slug))

    @api.put("/{slug}", response_model=ModelOut)
    def update_model(slug: str, body: ModelUpdate) -> ModelOut:
        with mutation(session_factory) as session:
            row = models.update(session, slug, body)
        return models.to_out(row)

    @api.delete("/{slug}", status_code=204)
    def delete_model(slug: str) -> Response:
        with mutation(session_factory) as session:
            models.delete(session, slug)
        return Response(status_code=204)

    return api
